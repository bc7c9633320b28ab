"""The inventory service: stock per (warehouse, SKU), locks with expiry, and the
CheckAvailability and LockInventory steps."""
