import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from invsaga.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PickRequestLine(_message.Message):
    __slots__ = ("warehouse_id", "sku", "quantity", "bin")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    sku: str
    quantity: int
    bin: str
    def __init__(self, warehouse_id: _Optional[str] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ..., bin: _Optional[str] = ...) -> None: ...

class GeneratePicklistInput(_message.Message):
    __slots__ = ("order_id", "lines", "priority", "is_urgent", "kind")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IS_URGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    lines: _containers.RepeatedCompositeFieldContainer[PickRequestLine]
    priority: int
    is_urgent: bool
    kind: _common_pb2.PicklistKind
    def __init__(self, order_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[PickRequestLine, _Mapping]]] = ..., priority: _Optional[int] = ..., is_urgent: _Optional[bool] = ..., kind: _Optional[_Union[_common_pb2.PicklistKind, str]] = ...) -> None: ...

class GeneratePicklistOutput(_message.Message):
    __slots__ = ("picklists",)
    PICKLISTS_FIELD_NUMBER: _ClassVar[int]
    picklists: _containers.RepeatedCompositeFieldContainer[_common_pb2.Picklist]
    def __init__(self, picklists: _Optional[_Iterable[_Union[_common_pb2.Picklist, _Mapping]]] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("context", "generate_picklist")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    GENERATE_PICKLIST_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.StepContext
    generate_picklist: GeneratePicklistInput
    def __init__(self, context: _Optional[_Union[_common_pb2.StepContext, _Mapping]] = ..., generate_picklist: _Optional[_Union[GeneratePicklistInput, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("generate_picklist",)
    GENERATE_PICKLIST_FIELD_NUMBER: _ClassVar[int]
    generate_picklist: GeneratePicklistOutput
    def __init__(self, generate_picklist: _Optional[_Union[GeneratePicklistOutput, _Mapping]] = ...) -> None: ...

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

class GetPicklistRequest(_message.Message):
    __slots__ = ("picklist_id",)
    PICKLIST_ID_FIELD_NUMBER: _ClassVar[int]
    picklist_id: str
    def __init__(self, picklist_id: _Optional[str] = ...) -> None: ...

class GetPicklistResponse(_message.Message):
    __slots__ = ("picklist",)
    PICKLIST_FIELD_NUMBER: _ClassVar[int]
    picklist: _common_pb2.Picklist
    def __init__(self, picklist: _Optional[_Union[_common_pb2.Picklist, _Mapping]] = ...) -> None: ...

class ListPicklistsRequest(_message.Message):
    __slots__ = ("saga_id", "warehouse_id", "status", "page_size", "page_token")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    warehouse_id: str
    status: _common_pb2.PicklistStatus
    page_size: int
    page_token: str
    def __init__(self, saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.PicklistStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPicklistsResponse(_message.Message):
    __slots__ = ("picklists", "next_page_token")
    PICKLISTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    picklists: _containers.RepeatedCompositeFieldContainer[_common_pb2.Picklist]
    next_page_token: str
    def __init__(self, picklists: _Optional[_Iterable[_Union[_common_pb2.Picklist, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePicklistStatusRequest(_message.Message):
    __slots__ = ("picklist_id", "status")
    PICKLIST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    picklist_id: str
    status: _common_pb2.PicklistStatus
    def __init__(self, picklist_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.PicklistStatus, str]] = ...) -> None: ...

class UpdatePicklistStatusResponse(_message.Message):
    __slots__ = ("picklist",)
    PICKLIST_FIELD_NUMBER: _ClassVar[int]
    picklist: _common_pb2.Picklist
    def __init__(self, picklist: _Optional[_Union[_common_pb2.Picklist, _Mapping]] = ...) -> None: ...

class CancelPicklistsRequest(_message.Message):
    __slots__ = ("saga_id", "all_or_nothing", "reason")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_OR_NOTHING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    all_or_nothing: bool
    reason: str
    def __init__(self, saga_id: _Optional[str] = ..., all_or_nothing: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelPicklistsResponse(_message.Message):
    __slots__ = ("cancelled", "untouched")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    UNTOUCHED_FIELD_NUMBER: _ClassVar[int]
    cancelled: _containers.RepeatedCompositeFieldContainer[_common_pb2.Picklist]
    untouched: _containers.RepeatedCompositeFieldContainer[_common_pb2.Picklist]
    def __init__(self, cancelled: _Optional[_Iterable[_Union[_common_pb2.Picklist, _Mapping]]] = ..., untouched: _Optional[_Iterable[_Union[_common_pb2.Picklist, _Mapping]]] = ...) -> None: ...

class PicklistChange(_message.Message):
    __slots__ = ("change_id", "picklist_id", "saga_id", "warehouse_id", "status", "changed_at")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    PICKLIST_ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    picklist_id: str
    saga_id: str
    warehouse_id: str
    status: _common_pb2.PicklistStatus
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, change_id: _Optional[int] = ..., picklist_id: _Optional[str] = ..., saga_id: _Optional[str] = ..., warehouse_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.PicklistStatus, str]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPicklistChangesRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListPicklistChangesResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[PicklistChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[PicklistChange, _Mapping]]] = ...) -> None: ...

class AckPicklistChangesRequest(_message.Message):
    __slots__ = ("change_ids",)
    CHANGE_IDS_FIELD_NUMBER: _ClassVar[int]
    change_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, change_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AckPicklistChangesResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...
