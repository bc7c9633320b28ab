"""The saga coordinator: definition, executor, store, recovery and the public servicer."""
