from invsaga.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryWarehousesInput(_message.Message):
    __slots__ = ("skus", "preferred_warehouses")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    preferred_warehouses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., preferred_warehouses: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryWarehousesOutput(_message.Message):
    __slots__ = ("warehouses",)
    WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    warehouses: _containers.RepeatedCompositeFieldContainer[_common_pb2.Warehouse]
    def __init__(self, warehouses: _Optional[_Iterable[_Union[_common_pb2.Warehouse, _Mapping]]] = ...) -> None: ...

class ValidateTransferInput(_message.Message):
    __slots__ = ("from_warehouse", "to_warehouse", "skus")
    FROM_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    TO_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    from_warehouse: str
    to_warehouse: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, from_warehouse: _Optional[str] = ..., to_warehouse: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidateTransferOutput(_message.Message):
    __slots__ = ("source", "destination")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    source: _common_pb2.Warehouse
    destination: _common_pb2.Warehouse
    def __init__(self, source: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ..., destination: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("context", "query_warehouses", "validate_transfer")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    QUERY_WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.StepContext
    query_warehouses: QueryWarehousesInput
    validate_transfer: ValidateTransferInput
    def __init__(self, context: _Optional[_Union[_common_pb2.StepContext, _Mapping]] = ..., query_warehouses: _Optional[_Union[QueryWarehousesInput, _Mapping]] = ..., validate_transfer: _Optional[_Union[ValidateTransferInput, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("query_warehouses", "validate_transfer")
    QUERY_WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    query_warehouses: QueryWarehousesOutput
    validate_transfer: ValidateTransferOutput
    def __init__(self, query_warehouses: _Optional[_Union[QueryWarehousesOutput, _Mapping]] = ..., validate_transfer: _Optional[_Union[ValidateTransferOutput, _Mapping]] = ...) -> None: ...

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

class UpsertWarehouseRequest(_message.Message):
    __slots__ = ("warehouse",)
    WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    warehouse: _common_pb2.Warehouse
    def __init__(self, warehouse: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ...) -> None: ...

class UpsertWarehouseResponse(_message.Message):
    __slots__ = ("warehouse",)
    WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    warehouse: _common_pb2.Warehouse
    def __init__(self, warehouse: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ...) -> None: ...

class GetWarehouseRequest(_message.Message):
    __slots__ = ("warehouse_id",)
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    def __init__(self, warehouse_id: _Optional[str] = ...) -> None: ...

class GetWarehouseResponse(_message.Message):
    __slots__ = ("warehouse",)
    WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    warehouse: _common_pb2.Warehouse
    def __init__(self, warehouse: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ...) -> None: ...

class ListWarehousesRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.WarehouseStatus
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[_common_pb2.WarehouseStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWarehousesResponse(_message.Message):
    __slots__ = ("warehouses", "next_page_token")
    WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    warehouses: _containers.RepeatedCompositeFieldContainer[_common_pb2.Warehouse]
    next_page_token: str
    def __init__(self, warehouses: _Optional[_Iterable[_Union[_common_pb2.Warehouse, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddAssortmentRequest(_message.Message):
    __slots__ = ("warehouse_id", "skus")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, warehouse_id: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ...) -> None: ...

class AddAssortmentResponse(_message.Message):
    __slots__ = ("warehouse",)
    WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    warehouse: _common_pb2.Warehouse
    def __init__(self, warehouse: _Optional[_Union[_common_pb2.Warehouse, _Mapping]] = ...) -> None: ...
