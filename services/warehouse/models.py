"""Tables of the warehouse service."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)

from invsaga.runtime.barrier import barrier_table

metadata = MetaData()

warehouses = Table(
    "warehouses",
    metadata,
    Column("warehouse_id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("address", String(256), nullable=False, server_default=""),
    Column("lat", Float, nullable=True),
    Column("lon", Float, nullable=True),
    Column("capacity", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("per_unit", Float, nullable=False, server_default="0"),
    Column("per_km_unit", Float, nullable=False, server_default="0"),
    Column("per_shipment", Float, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("capacity >= 0", name="ck_warehouses_capacity_nonnegative"),
    CheckConstraint("status IN ('active', 'maintenance', 'closed')", name="ck_warehouses_status"),
)

assortment = Table(
    "assortment",
    metadata,
    Column("warehouse_id", String(64), ForeignKey("warehouses.warehouse_id", ondelete="CASCADE"), primary_key=True),
    Column("sku", String(256), primary_key=True),
    Index("ix_assortment_sku", "sku"),
)

# One row, whose version every write of the two tables above bumps in its own transaction:
# each replica keeps the catalog in memory and checks with one tiny read that it is current.
catalog_version = Table(
    "catalog_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

barrier = barrier_table(metadata)
