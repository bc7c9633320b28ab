import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SagaStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_STEP_UNSPECIFIED: _ClassVar[SagaStep]
    SAGA_STEP_QUERY_WAREHOUSES: _ClassVar[SagaStep]
    SAGA_STEP_CHECK_AVAILABILITY: _ClassVar[SagaStep]
    SAGA_STEP_ALLOCATE_INVENTORY: _ClassVar[SagaStep]
    SAGA_STEP_LOCK_INVENTORY: _ClassVar[SagaStep]
    SAGA_STEP_GENERATE_PICKLIST: _ClassVar[SagaStep]
    SAGA_STEP_NOTIFY: _ClassVar[SagaStep]
    SAGA_STEP_NOTIFY_FAILURE: _ClassVar[SagaStep]
    SAGA_STEP_NOTIFY_RESERVATION: _ClassVar[SagaStep]
    SAGA_STEP_VALIDATE_TRANSFER: _ClassVar[SagaStep]
    SAGA_STEP_EXPECT_TRANSFER: _ClassVar[SagaStep]

class WarehouseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WAREHOUSE_STATUS_UNSPECIFIED: _ClassVar[WarehouseStatus]
    WAREHOUSE_STATUS_ACTIVE: _ClassVar[WarehouseStatus]
    WAREHOUSE_STATUS_MAINTENANCE: _ClassVar[WarehouseStatus]
    WAREHOUSE_STATUS_CLOSED: _ClassVar[WarehouseStatus]

class AllocationStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_STRATEGY_UNSPECIFIED: _ClassVar[AllocationStrategy]
    ALLOCATION_STRATEGY_PRIORITY: _ClassVar[AllocationStrategy]
    ALLOCATION_STRATEGY_NEAREST: _ClassVar[AllocationStrategy]
    ALLOCATION_STRATEGY_LOAD_BALANCE: _ClassVar[AllocationStrategy]
    ALLOCATION_STRATEGY_COST_OPTIMIZE: _ClassVar[AllocationStrategy]

class AllocationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_STATUS_UNSPECIFIED: _ClassVar[AllocationStatus]
    ALLOCATION_STATUS_ACTIVE: _ClassVar[AllocationStatus]
    ALLOCATION_STATUS_CANCELLED: _ClassVar[AllocationStatus]
    ALLOCATION_STATUS_EXPIRED: _ClassVar[AllocationStatus]
    ALLOCATION_STATUS_FULFILLED: _ClassVar[AllocationStatus]

class PicklistStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PICKLIST_STATUS_UNSPECIFIED: _ClassVar[PicklistStatus]
    PICKLIST_STATUS_PENDING: _ClassVar[PicklistStatus]
    PICKLIST_STATUS_PROCESSING: _ClassVar[PicklistStatus]
    PICKLIST_STATUS_COMPLETED: _ClassVar[PicklistStatus]
    PICKLIST_STATUS_CANCELLED: _ClassVar[PicklistStatus]

class PicklistKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PICKLIST_KIND_UNSPECIFIED: _ClassVar[PicklistKind]
    PICKLIST_KIND_ORDER: _ClassVar[PicklistKind]
    PICKLIST_KIND_TRANSFER_OUT: _ClassVar[PicklistKind]

class TransferLineStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_LINE_STATUS_UNSPECIFIED: _ClassVar[TransferLineStatus]
    TRANSFER_LINE_STATUS_EXPECTED: _ClassVar[TransferLineStatus]
    TRANSFER_LINE_STATUS_IN_TRANSIT: _ClassVar[TransferLineStatus]
    TRANSFER_LINE_STATUS_RECEIVED: _ClassVar[TransferLineStatus]
    TRANSFER_LINE_STATUS_RECEIVED_SHORT: _ClassVar[TransferLineStatus]
    TRANSFER_LINE_STATUS_CANCELLED: _ClassVar[TransferLineStatus]

class LockStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCK_STATUS_UNSPECIFIED: _ClassVar[LockStatus]
    LOCK_STATUS_HELD: _ClassVar[LockStatus]
    LOCK_STATUS_RELEASED: _ClassVar[LockStatus]
    LOCK_STATUS_CONSUMED: _ClassVar[LockStatus]
    LOCK_STATUS_EXPIRED: _ClassVar[LockStatus]

class NotificationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_KIND_UNSPECIFIED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_RESERVATION_CONFIRMED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_RESERVATION_FAILED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_LOCK_EXPIRED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_ALLOCATION_EXPIRED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_RESERVATION_CANCELLED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_RESERVATION_EXPIRED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_TRANSFER_CONFIRMED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_TRANSFER_FAILED: _ClassVar[NotificationKind]

class ReservationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATE_UNSPECIFIED: _ClassVar[ReservationState]
    RESERVATION_STATE_RESERVED: _ClassVar[ReservationState]
    RESERVATION_STATE_PICKING: _ClassVar[ReservationState]
    RESERVATION_STATE_FULFILLED: _ClassVar[ReservationState]
    RESERVATION_STATE_RELEASED: _ClassVar[ReservationState]
    RESERVATION_STATE_EXPIRED: _ClassVar[ReservationState]
    RESERVATION_STATE_PARTIALLY_FULFILLED: _ClassVar[ReservationState]
SAGA_STEP_UNSPECIFIED: SagaStep
SAGA_STEP_QUERY_WAREHOUSES: SagaStep
SAGA_STEP_CHECK_AVAILABILITY: SagaStep
SAGA_STEP_ALLOCATE_INVENTORY: SagaStep
SAGA_STEP_LOCK_INVENTORY: SagaStep
SAGA_STEP_GENERATE_PICKLIST: SagaStep
SAGA_STEP_NOTIFY: SagaStep
SAGA_STEP_NOTIFY_FAILURE: SagaStep
SAGA_STEP_NOTIFY_RESERVATION: SagaStep
SAGA_STEP_VALIDATE_TRANSFER: SagaStep
SAGA_STEP_EXPECT_TRANSFER: SagaStep
WAREHOUSE_STATUS_UNSPECIFIED: WarehouseStatus
WAREHOUSE_STATUS_ACTIVE: WarehouseStatus
WAREHOUSE_STATUS_MAINTENANCE: WarehouseStatus
WAREHOUSE_STATUS_CLOSED: WarehouseStatus
ALLOCATION_STRATEGY_UNSPECIFIED: AllocationStrategy
ALLOCATION_STRATEGY_PRIORITY: AllocationStrategy
ALLOCATION_STRATEGY_NEAREST: AllocationStrategy
ALLOCATION_STRATEGY_LOAD_BALANCE: AllocationStrategy
ALLOCATION_STRATEGY_COST_OPTIMIZE: AllocationStrategy
ALLOCATION_STATUS_UNSPECIFIED: AllocationStatus
ALLOCATION_STATUS_ACTIVE: AllocationStatus
ALLOCATION_STATUS_CANCELLED: AllocationStatus
ALLOCATION_STATUS_EXPIRED: AllocationStatus
ALLOCATION_STATUS_FULFILLED: AllocationStatus
PICKLIST_STATUS_UNSPECIFIED: PicklistStatus
PICKLIST_STATUS_PENDING: PicklistStatus
PICKLIST_STATUS_PROCESSING: PicklistStatus
PICKLIST_STATUS_COMPLETED: PicklistStatus
PICKLIST_STATUS_CANCELLED: PicklistStatus
PICKLIST_KIND_UNSPECIFIED: PicklistKind
PICKLIST_KIND_ORDER: PicklistKind
PICKLIST_KIND_TRANSFER_OUT: PicklistKind
TRANSFER_LINE_STATUS_UNSPECIFIED: TransferLineStatus
TRANSFER_LINE_STATUS_EXPECTED: TransferLineStatus
TRANSFER_LINE_STATUS_IN_TRANSIT: TransferLineStatus
TRANSFER_LINE_STATUS_RECEIVED: TransferLineStatus
TRANSFER_LINE_STATUS_RECEIVED_SHORT: TransferLineStatus
TRANSFER_LINE_STATUS_CANCELLED: TransferLineStatus
LOCK_STATUS_UNSPECIFIED: LockStatus
LOCK_STATUS_HELD: LockStatus
LOCK_STATUS_RELEASED: LockStatus
LOCK_STATUS_CONSUMED: LockStatus
LOCK_STATUS_EXPIRED: LockStatus
NOTIFICATION_KIND_UNSPECIFIED: NotificationKind
NOTIFICATION_KIND_RESERVATION_CONFIRMED: NotificationKind
NOTIFICATION_KIND_RESERVATION_FAILED: NotificationKind
NOTIFICATION_KIND_LOCK_EXPIRED: NotificationKind
NOTIFICATION_KIND_ALLOCATION_EXPIRED: NotificationKind
NOTIFICATION_KIND_RESERVATION_CANCELLED: NotificationKind
NOTIFICATION_KIND_RESERVATION_EXPIRED: NotificationKind
NOTIFICATION_KIND_TRANSFER_CONFIRMED: NotificationKind
NOTIFICATION_KIND_TRANSFER_FAILED: NotificationKind
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_RESERVED: ReservationState
RESERVATION_STATE_PICKING: ReservationState
RESERVATION_STATE_FULFILLED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState
RESERVATION_STATE_PARTIALLY_FULFILLED: ReservationState

class StepContext(_message.Message):
    __slots__ = ("saga_id", "step", "idempotency_key", "traceparent")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    step: SagaStep
    idempotency_key: str
    traceparent: str
    def __init__(self, saga_id: _Optional[str] = ..., step: _Optional[_Union[SagaStep, str]] = ..., idempotency_key: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class CallStatus(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("address", "lat", "lon")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    address: str
    lat: float
    lon: float
    def __init__(self, address: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ...) -> None: ...

class CostModel(_message.Message):
    __slots__ = ("per_unit", "per_km_unit", "per_shipment")
    PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    PER_KM_UNIT_FIELD_NUMBER: _ClassVar[int]
    PER_SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    per_unit: float
    per_km_unit: float
    per_shipment: float
    def __init__(self, per_unit: _Optional[float] = ..., per_km_unit: _Optional[float] = ..., per_shipment: _Optional[float] = ...) -> None: ...

class Warehouse(_message.Message):
    __slots__ = ("warehouse_id", "name", "location", "capacity", "status", "priority", "cost", "skus", "updated_at")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    name: str
    location: Location
    capacity: int
    status: WarehouseStatus
    priority: int
    cost: CostModel
    skus: _containers.RepeatedScalarFieldContainer[str]
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, warehouse_id: _Optional[str] = ..., name: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., capacity: _Optional[int] = ..., status: _Optional[_Union[WarehouseStatus, str]] = ..., priority: _Optional[int] = ..., cost: _Optional[_Union[CostModel, _Mapping]] = ..., skus: _Optional[_Iterable[str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("product_id", "sku", "quantity", "unit", "description")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    sku: str
    quantity: int
    unit: str
    description: str
    def __init__(self, product_id: _Optional[str] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ..., unit: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class StockLevel(_message.Message):
    __slots__ = ("warehouse_id", "sku", "product_id", "on_hand", "locked", "available", "bin", "incoming")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    INCOMING_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    product_id: str
    on_hand: int
    locked: int
    available: int
    bin: str
    incoming: int
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., product_id: _Optional[str] = ..., on_hand: _Optional[int] = ..., locked: _Optional[int] = ..., available: _Optional[int] = ..., bin: _Optional[str] = ..., incoming: _Optional[int] = ...) -> None: ...

class WarehouseLoad(_message.Message):
    __slots__ = ("warehouse_id", "locked_units")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    LOCKED_UNITS_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    locked_units: int
    def __init__(self, warehouse_id: _Optional[str] = ..., locked_units: _Optional[int] = ...) -> None: ...

class Shortage(_message.Message):
    __slots__ = ("sku", "required", "available")
    SKU_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    required: int
    available: int
    def __init__(self, sku: _Optional[str] = ..., required: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...

class AllocationLine(_message.Message):
    __slots__ = ("warehouse_id", "sku", "quantity")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    quantity: int
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("allocation_id", "strategy", "lines", "expires_at", "optimal", "total_cost", "status", "saga_id")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    strategy: AllocationStrategy
    lines: _containers.RepeatedCompositeFieldContainer[AllocationLine]
    expires_at: _timestamp_pb2.Timestamp
    optimal: bool
    total_cost: float
    status: AllocationStatus
    saga_id: str
    def __init__(self, allocation_id: _Optional[str] = ..., strategy: _Optional[_Union[AllocationStrategy, str]] = ..., lines: _Optional[_Iterable[_Union[AllocationLine, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., optimal: _Optional[bool] = ..., total_cost: _Optional[float] = ..., status: _Optional[_Union[AllocationStatus, str]] = ..., saga_id: _Optional[str] = ...) -> None: ...

class PicklistLine(_message.Message):
    __slots__ = ("sku", "quantity", "bin", "sequence")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    bin: str
    sequence: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., bin: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class Picklist(_message.Message):
    __slots__ = ("picklist_id", "warehouse_id", "priority", "status", "lines", "saga_id", "order_id", "is_urgent", "created_at", "updated_at", "kind")
    PICKLIST_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    IS_URGENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    picklist_id: str
    warehouse_id: str
    priority: int
    status: PicklistStatus
    lines: _containers.RepeatedCompositeFieldContainer[PicklistLine]
    saga_id: str
    order_id: str
    is_urgent: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    kind: PicklistKind
    def __init__(self, picklist_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., priority: _Optional[int] = ..., status: _Optional[_Union[PicklistStatus, str]] = ..., lines: _Optional[_Iterable[_Union[PicklistLine, _Mapping]]] = ..., saga_id: _Optional[str] = ..., order_id: _Optional[str] = ..., is_urgent: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[PicklistKind, str]] = ...) -> None: ...

class TransferLine(_message.Message):
    __slots__ = ("transfer_id", "sku", "from_warehouse", "to_warehouse", "quantity", "received", "status", "expected_arrival", "updated_at", "missing")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    FROM_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    TO_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    sku: str
    from_warehouse: str
    to_warehouse: str
    quantity: int
    received: int
    status: TransferLineStatus
    expected_arrival: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    missing: int
    def __init__(self, transfer_id: _Optional[str] = ..., sku: _Optional[str] = ..., from_warehouse: _Optional[str] = ..., to_warehouse: _Optional[str] = ..., quantity: _Optional[int] = ..., received: _Optional[int] = ..., status: _Optional[_Union[TransferLineStatus, str]] = ..., expected_arrival: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., missing: _Optional[int] = ...) -> None: ...

class ReceivedLine(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class InventoryLock(_message.Message):
    __slots__ = ("lock_id", "saga_id", "warehouse_id", "sku", "quantity", "status", "expires_at", "picking", "created_at")
    LOCK_ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PICKING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    lock_id: str
    saga_id: str
    warehouse_id: str
    sku: str
    quantity: int
    status: LockStatus
    expires_at: _timestamp_pb2.Timestamp
    picking: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, lock_id: _Optional[str] = ..., saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ..., status: _Optional[_Union[LockStatus, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., picking: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
