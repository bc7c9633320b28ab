import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from invsaga.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckAvailabilityInput(_message.Message):
    __slots__ = ("items", "warehouse_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    warehouse_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., warehouse_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemAvailability(_message.Message):
    __slots__ = ("sku", "required", "available")
    SKU_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    required: int
    available: int
    def __init__(self, sku: _Optional[str] = ..., required: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...

class CheckAvailabilityOutput(_message.Message):
    __slots__ = ("stock", "loads", "items", "shortages", "sufficient")
    STOCK_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SHORTAGES_FIELD_NUMBER: _ClassVar[int]
    SUFFICIENT_FIELD_NUMBER: _ClassVar[int]
    stock: _containers.RepeatedCompositeFieldContainer[_common_pb2.StockLevel]
    loads: _containers.RepeatedCompositeFieldContainer[_common_pb2.WarehouseLoad]
    items: _containers.RepeatedCompositeFieldContainer[ItemAvailability]
    shortages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Shortage]
    sufficient: bool
    def __init__(self, stock: _Optional[_Iterable[_Union[_common_pb2.StockLevel, _Mapping]]] = ..., loads: _Optional[_Iterable[_Union[_common_pb2.WarehouseLoad, _Mapping]]] = ..., items: _Optional[_Iterable[_Union[ItemAvailability, _Mapping]]] = ..., shortages: _Optional[_Iterable[_Union[_common_pb2.Shortage, _Mapping]]] = ..., sufficient: _Optional[bool] = ...) -> None: ...

class LockInventoryInput(_message.Message):
    __slots__ = ("allocation_id", "lines", "expires_at", "order_id", "capacities")
    class CapacitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.AllocationLine]
    expires_at: _timestamp_pb2.Timestamp
    order_id: str
    capacities: _containers.ScalarMap[str, int]
    def __init__(self, allocation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_common_pb2.AllocationLine, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_id: _Optional[str] = ..., capacities: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LockInventoryOutput(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    def __init__(self, locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ...) -> None: ...

class ExpectTransferInput(_message.Message):
    __slots__ = ("from_warehouse", "to_warehouse", "items", "expected_arrival")
    FROM_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    TO_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    from_warehouse: str
    to_warehouse: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    expected_arrival: _timestamp_pb2.Timestamp
    def __init__(self, from_warehouse: _Optional[str] = ..., to_warehouse: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., expected_arrival: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExpectTransferOutput(_message.Message):
    __slots__ = ("destination",)
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    destination: _containers.RepeatedCompositeFieldContainer[_common_pb2.StockLevel]
    def __init__(self, destination: _Optional[_Iterable[_Union[_common_pb2.StockLevel, _Mapping]]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("context", "check_availability", "lock_inventory", "expect_transfer")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHECK_AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    LOCK_INVENTORY_FIELD_NUMBER: _ClassVar[int]
    EXPECT_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.StepContext
    check_availability: CheckAvailabilityInput
    lock_inventory: LockInventoryInput
    expect_transfer: ExpectTransferInput
    def __init__(self, context: _Optional[_Union[_common_pb2.StepContext, _Mapping]] = ..., check_availability: _Optional[_Union[CheckAvailabilityInput, _Mapping]] = ..., lock_inventory: _Optional[_Union[LockInventoryInput, _Mapping]] = ..., expect_transfer: _Optional[_Union[ExpectTransferInput, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("check_availability", "lock_inventory", "expect_transfer")
    CHECK_AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    LOCK_INVENTORY_FIELD_NUMBER: _ClassVar[int]
    EXPECT_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    check_availability: CheckAvailabilityOutput
    lock_inventory: LockInventoryOutput
    expect_transfer: ExpectTransferOutput
    def __init__(self, check_availability: _Optional[_Union[CheckAvailabilityOutput, _Mapping]] = ..., lock_inventory: _Optional[_Union[LockInventoryOutput, _Mapping]] = ..., expect_transfer: _Optional[_Union[ExpectTransferOutput, _Mapping]] = ...) -> None: ...

class ExecuteResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ExecuteResponse
    error: _common_pb2.CallStatus
    def __init__(self, response: _Optional[_Union[ExecuteResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.CallStatus, _Mapping]] = ...) -> None: ...

class ExecuteStreamRequest(_message.Message):
    __slots__ = ("id", "requests")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    requests: _containers.RepeatedCompositeFieldContainer[ExecuteRequest]
    def __init__(self, id: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[ExecuteRequest, _Mapping]]] = ...) -> None: ...

class ExecuteStreamResponse(_message.Message):
    __slots__ = ("id", "results")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[ExecuteResult]
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ExecuteResult, _Mapping]]] = ...) -> None: ...

class CompensateRequest(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.StepContext
    def __init__(self, context: _Optional[_Union[_common_pb2.StepContext, _Mapping]] = ...) -> None: ...

class CompensateResponse(_message.Message):
    __slots__ = ("null_compensation", "released_units")
    NULL_COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    RELEASED_UNITS_FIELD_NUMBER: _ClassVar[int]
    null_compensation: bool
    released_units: int
    def __init__(self, null_compensation: _Optional[bool] = ..., released_units: _Optional[int] = ...) -> None: ...

class SetStockRequest(_message.Message):
    __slots__ = ("warehouse_id", "sku", "product_id", "on_hand", "bin")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    product_id: str
    on_hand: int
    bin: str
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., product_id: _Optional[str] = ..., on_hand: _Optional[int] = ..., bin: _Optional[str] = ...) -> None: ...

class SetStockResponse(_message.Message):
    __slots__ = ("stock",)
    STOCK_FIELD_NUMBER: _ClassVar[int]
    stock: _common_pb2.StockLevel
    def __init__(self, stock: _Optional[_Union[_common_pb2.StockLevel, _Mapping]] = ...) -> None: ...

class AdjustStockRequest(_message.Message):
    __slots__ = ("warehouse_id", "sku", "delta", "reason")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    delta: int
    reason: str
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., delta: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AdjustStockResponse(_message.Message):
    __slots__ = ("stock",)
    STOCK_FIELD_NUMBER: _ClassVar[int]
    stock: _common_pb2.StockLevel
    def __init__(self, stock: _Optional[_Union[_common_pb2.StockLevel, _Mapping]] = ...) -> None: ...

class GetStockRequest(_message.Message):
    __slots__ = ("warehouse_id", "sku")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ...) -> None: ...

class GetStockResponse(_message.Message):
    __slots__ = ("stock",)
    STOCK_FIELD_NUMBER: _ClassVar[int]
    stock: _common_pb2.StockLevel
    def __init__(self, stock: _Optional[_Union[_common_pb2.StockLevel, _Mapping]] = ...) -> None: ...

class ListStockRequest(_message.Message):
    __slots__ = ("warehouse_id", "sku", "page_size", "page_token")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    page_size: int
    page_token: str
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStockResponse(_message.Message):
    __slots__ = ("stock", "next_page_token")
    STOCK_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stock: _containers.RepeatedCompositeFieldContainer[_common_pb2.StockLevel]
    next_page_token: str
    def __init__(self, stock: _Optional[_Iterable[_Union[_common_pb2.StockLevel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListLocksRequest(_message.Message):
    __slots__ = ("saga_id", "warehouse_id", "status", "page_size", "page_token")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    warehouse_id: str
    status: _common_pb2.LockStatus
    page_size: int
    page_token: str
    def __init__(self, saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.LockStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLocksResponse(_message.Message):
    __slots__ = ("locks", "next_page_token")
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    next_page_token: str
    def __init__(self, locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class HoldLocksRequest(_message.Message):
    __slots__ = ("saga_id", "warehouse_id")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    warehouse_id: str
    def __init__(self, saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ...) -> None: ...

class HoldLocksResponse(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    def __init__(self, locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ...) -> None: ...

class CommitLocksRequest(_message.Message):
    __slots__ = ("saga_id", "warehouse_id")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    warehouse_id: str
    def __init__(self, saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ...) -> None: ...

class CommitLocksResponse(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    def __init__(self, locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ...) -> None: ...

class ReleaseLocksRequest(_message.Message):
    __slots__ = ("saga_id", "warehouse_id", "reason")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    warehouse_id: str
    reason: str
    def __init__(self, saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseLocksResponse(_message.Message):
    __slots__ = ("locks",)
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    def __init__(self, locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ...) -> None: ...

class ExtendLocksRequest(_message.Message):
    __slots__ = ("saga_id", "until")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    until: _timestamp_pb2.Timestamp
    def __init__(self, saga_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExtendLocksResponse(_message.Message):
    __slots__ = ("extended",)
    EXTENDED_FIELD_NUMBER: _ClassVar[int]
    extended: int
    def __init__(self, extended: _Optional[int] = ...) -> None: ...

class ReceiveTransferRequest(_message.Message):
    __slots__ = ("transfer_id", "lines")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReceivedLine]
    def __init__(self, transfer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_common_pb2.ReceivedLine, _Mapping]]] = ...) -> None: ...

class ReceiveTransferResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransferLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[_common_pb2.TransferLine, _Mapping]]] = ...) -> None: ...

class ListTransfersRequest(_message.Message):
    __slots__ = ("transfer_id", "warehouse_id", "page_size", "page_token")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    warehouse_id: str
    page_size: int
    page_token: str
    def __init__(self, transfer_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransfersResponse(_message.Message):
    __slots__ = ("lines", "next_page_token")
    LINES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransferLine]
    next_page_token: str
    def __init__(self, lines: _Optional[_Iterable[_Union[_common_pb2.TransferLine, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
