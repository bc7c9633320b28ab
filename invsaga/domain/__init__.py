"""Domain code the coordinator and the participants share: plain functions, no gRPC, no database."""
