import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from invsaga.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocateInventoryInput(_message.Message):
    __slots__ = ("items", "strategy", "preferred_warehouses", "warehouses", "stock", "loads", "customer_location", "expires_at", "order_id", "plan_allocation_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_LOCATION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    strategy: _common_pb2.AllocationStrategy
    preferred_warehouses: _containers.RepeatedScalarFieldContainer[str]
    warehouses: _containers.RepeatedCompositeFieldContainer[_common_pb2.Warehouse]
    stock: _containers.RepeatedCompositeFieldContainer[_common_pb2.StockLevel]
    loads: _containers.RepeatedCompositeFieldContainer[_common_pb2.WarehouseLoad]
    customer_location: _common_pb2.Location
    expires_at: _timestamp_pb2.Timestamp
    order_id: str
    plan_allocation_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., strategy: _Optional[_Union[_common_pb2.AllocationStrategy, str]] = ..., preferred_warehouses: _Optional[_Iterable[str]] = ..., warehouses: _Optional[_Iterable[_Union[_common_pb2.Warehouse, _Mapping]]] = ..., stock: _Optional[_Iterable[_Union[_common_pb2.StockLevel, _Mapping]]] = ..., loads: _Optional[_Iterable[_Union[_common_pb2.WarehouseLoad, _Mapping]]] = ..., customer_location: _Optional[_Union[_common_pb2.Location, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_id: _Optional[str] = ..., plan_allocation_id: _Optional[str] = ...) -> None: ...

class AllocateInventoryOutput(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _common_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("context", "allocate_inventory")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ALLOCATE_INVENTORY_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.StepContext
    allocate_inventory: AllocateInventoryInput
    def __init__(self, context: _Optional[_Union[_common_pb2.StepContext, _Mapping]] = ..., allocate_inventory: _Optional[_Union[AllocateInventoryInput, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("allocate_inventory",)
    ALLOCATE_INVENTORY_FIELD_NUMBER: _ClassVar[int]
    allocate_inventory: AllocateInventoryOutput
    def __init__(self, allocate_inventory: _Optional[_Union[AllocateInventoryOutput, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("null_compensation",)
    NULL_COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    null_compensation: bool
    def __init__(self, null_compensation: _Optional[bool] = ...) -> None: ...

class GetAllocationRequest(_message.Message):
    __slots__ = ("allocation_id",)
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    def __init__(self, allocation_id: _Optional[str] = ...) -> None: ...

class GetAllocationResponse(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _common_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ...) -> None: ...

class ListAllocationsRequest(_message.Message):
    __slots__ = ("saga_id", "status", "page_size", "page_token")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    status: _common_pb2.AllocationStatus
    page_size: int
    page_token: str
    def __init__(self, saga_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.AllocationStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAllocationsResponse(_message.Message):
    __slots__ = ("allocations", "next_page_token")
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    allocations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Allocation]
    next_page_token: str
    def __init__(self, allocations: _Optional[_Iterable[_Union[_common_pb2.Allocation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelAllocationRequest(_message.Message):
    __slots__ = ("allocation_id", "reason")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    reason: str
    def __init__(self, allocation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelAllocationResponse(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _common_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ...) -> None: ...

class SettleAllocationRequest(_message.Message):
    __slots__ = ("allocation_id", "status", "reason")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    status: _common_pb2.AllocationStatus
    reason: str
    def __init__(self, allocation_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.AllocationStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SettleAllocationResponse(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _common_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ...) -> None: ...

class ExtendAllocationRequest(_message.Message):
    __slots__ = ("allocation_id", "until")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    until: _timestamp_pb2.Timestamp
    def __init__(self, allocation_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExtendAllocationResponse(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _common_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ...) -> None: ...
