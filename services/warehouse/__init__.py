"""The warehouse service: warehouses, their assortment, and the QueryWarehouses step."""
