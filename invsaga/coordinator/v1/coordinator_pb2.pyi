import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from invsaga.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_TYPE_UNSPECIFIED: _ClassVar[RequestType]
    REQUEST_TYPE_RESERVATION: _ClassVar[RequestType]
    REQUEST_TYPE_ALLOCATION: _ClassVar[RequestType]
    REQUEST_TYPE_TRANSFER: _ClassVar[RequestType]

class SagaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_KIND_UNSPECIFIED: _ClassVar[SagaKind]
    SAGA_KIND_RESERVATION: _ClassVar[SagaKind]
    SAGA_KIND_TRANSFER: _ClassVar[SagaKind]

class SagaStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_STATUS_UNSPECIFIED: _ClassVar[SagaStatus]
    SAGA_STATUS_PENDING: _ClassVar[SagaStatus]
    SAGA_STATUS_RUNNING: _ClassVar[SagaStatus]
    SAGA_STATUS_COMPENSATING: _ClassVar[SagaStatus]
    SAGA_STATUS_COMPLETED: _ClassVar[SagaStatus]
    SAGA_STATUS_COMPENSATED: _ClassVar[SagaStatus]
    SAGA_STATUS_FAILED: _ClassVar[SagaStatus]

class StepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATUS_UNSPECIFIED: _ClassVar[StepStatus]
    STEP_STATUS_PENDING: _ClassVar[StepStatus]
    STEP_STATUS_RUNNING: _ClassVar[StepStatus]
    STEP_STATUS_SUCCEEDED: _ClassVar[StepStatus]
    STEP_STATUS_FAILED: _ClassVar[StepStatus]
    STEP_STATUS_COMPENSATING: _ClassVar[StepStatus]
    STEP_STATUS_COMPENSATED: _ClassVar[StepStatus]
    STEP_STATUS_SKIPPED: _ClassVar[StepStatus]

class TransferState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_STATE_UNSPECIFIED: _ClassVar[TransferState]
    TRANSFER_STATE_RESERVED: _ClassVar[TransferState]
    TRANSFER_STATE_PICKING: _ClassVar[TransferState]
    TRANSFER_STATE_IN_TRANSIT: _ClassVar[TransferState]
    TRANSFER_STATE_RECEIVED: _ClassVar[TransferState]
    TRANSFER_STATE_RECEIVED_SHORT: _ClassVar[TransferState]
    TRANSFER_STATE_CANCELLED: _ClassVar[TransferState]

class SagaEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_EVENT_TYPE_UNSPECIFIED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_STARTED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_STARTED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_SUCCEEDED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_RETRYING: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_FAILED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_COMPENSATION_STARTED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_COMPENSATING: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_COMPENSATED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_STEP_SKIPPED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_COMPLETED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_COMPENSATED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_FAILED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_CANCEL_REQUESTED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_RESUMED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_SAGA_RECOVERED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_RESERVATION_CHANGED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_RESERVATION_EXTENDED: _ClassVar[SagaEventType]
    SAGA_EVENT_TYPE_TRANSFER_CHANGED: _ClassVar[SagaEventType]
REQUEST_TYPE_UNSPECIFIED: RequestType
REQUEST_TYPE_RESERVATION: RequestType
REQUEST_TYPE_ALLOCATION: RequestType
REQUEST_TYPE_TRANSFER: RequestType
SAGA_KIND_UNSPECIFIED: SagaKind
SAGA_KIND_RESERVATION: SagaKind
SAGA_KIND_TRANSFER: SagaKind
SAGA_STATUS_UNSPECIFIED: SagaStatus
SAGA_STATUS_PENDING: SagaStatus
SAGA_STATUS_RUNNING: SagaStatus
SAGA_STATUS_COMPENSATING: SagaStatus
SAGA_STATUS_COMPLETED: SagaStatus
SAGA_STATUS_COMPENSATED: SagaStatus
SAGA_STATUS_FAILED: SagaStatus
STEP_STATUS_UNSPECIFIED: StepStatus
STEP_STATUS_PENDING: StepStatus
STEP_STATUS_RUNNING: StepStatus
STEP_STATUS_SUCCEEDED: StepStatus
STEP_STATUS_FAILED: StepStatus
STEP_STATUS_COMPENSATING: StepStatus
STEP_STATUS_COMPENSATED: StepStatus
STEP_STATUS_SKIPPED: StepStatus
TRANSFER_STATE_UNSPECIFIED: TransferState
TRANSFER_STATE_RESERVED: TransferState
TRANSFER_STATE_PICKING: TransferState
TRANSFER_STATE_IN_TRANSIT: TransferState
TRANSFER_STATE_RECEIVED: TransferState
TRANSFER_STATE_RECEIVED_SHORT: TransferState
TRANSFER_STATE_CANCELLED: TransferState
SAGA_EVENT_TYPE_UNSPECIFIED: SagaEventType
SAGA_EVENT_TYPE_SAGA_STARTED: SagaEventType
SAGA_EVENT_TYPE_STEP_STARTED: SagaEventType
SAGA_EVENT_TYPE_STEP_SUCCEEDED: SagaEventType
SAGA_EVENT_TYPE_STEP_RETRYING: SagaEventType
SAGA_EVENT_TYPE_STEP_FAILED: SagaEventType
SAGA_EVENT_TYPE_COMPENSATION_STARTED: SagaEventType
SAGA_EVENT_TYPE_STEP_COMPENSATING: SagaEventType
SAGA_EVENT_TYPE_STEP_COMPENSATED: SagaEventType
SAGA_EVENT_TYPE_STEP_SKIPPED: SagaEventType
SAGA_EVENT_TYPE_SAGA_COMPLETED: SagaEventType
SAGA_EVENT_TYPE_SAGA_COMPENSATED: SagaEventType
SAGA_EVENT_TYPE_SAGA_FAILED: SagaEventType
SAGA_EVENT_TYPE_CANCEL_REQUESTED: SagaEventType
SAGA_EVENT_TYPE_SAGA_RESUMED: SagaEventType
SAGA_EVENT_TYPE_SAGA_RECOVERED: SagaEventType
SAGA_EVENT_TYPE_RESERVATION_CHANGED: SagaEventType
SAGA_EVENT_TYPE_RESERVATION_EXTENDED: SagaEventType
SAGA_EVENT_TYPE_TRANSFER_CHANGED: SagaEventType

class InventoryRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "customer_id", "request_type", "items", "preferred_warehouses", "allocation_strategy", "priority", "is_urgent", "expired_at", "metadata", "customer_location", "allocation_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    IS_URGENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_AT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_LOCATION_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    customer_id: str
    request_type: RequestType
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    preferred_warehouses: _containers.RepeatedScalarFieldContainer[str]
    allocation_strategy: _common_pb2.AllocationStrategy
    priority: int
    is_urgent: bool
    expired_at: _timestamp_pb2.Timestamp
    metadata: _struct_pb2.Struct
    customer_location: _common_pb2.Location
    allocation_id: str
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., request_type: _Optional[_Union[RequestType, str]] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., preferred_warehouses: _Optional[_Iterable[str]] = ..., allocation_strategy: _Optional[_Union[_common_pb2.AllocationStrategy, str]] = ..., priority: _Optional[int] = ..., is_urgent: _Optional[bool] = ..., expired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., customer_location: _Optional[_Union[_common_pb2.Location, _Mapping]] = ..., allocation_id: _Optional[str] = ...) -> None: ...

class StepState(_message.Message):
    __slots__ = ("name", "status", "attempts", "started_at", "finished_at", "error", "compensation_attempts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: StepStatus
    attempts: int
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    compensation_attempts: int
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[StepStatus, str]] = ..., attempts: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., compensation_attempts: _Optional[int] = ...) -> None: ...

class SagaFailure(_message.Message):
    __slots__ = ("step", "code", "reason", "message", "shortages")
    STEP_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SHORTAGES_FIELD_NUMBER: _ClassVar[int]
    step: str
    code: str
    reason: str
    message: str
    shortages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Shortage]
    def __init__(self, step: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., shortages: _Optional[_Iterable[_Union[_common_pb2.Shortage, _Mapping]]] = ...) -> None: ...

class Availability(_message.Message):
    __slots__ = ("stock", "loads", "shortages")
    STOCK_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    SHORTAGES_FIELD_NUMBER: _ClassVar[int]
    stock: _containers.RepeatedCompositeFieldContainer[_common_pb2.StockLevel]
    loads: _containers.RepeatedCompositeFieldContainer[_common_pb2.WarehouseLoad]
    shortages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Shortage]
    def __init__(self, stock: _Optional[_Iterable[_Union[_common_pb2.StockLevel, _Mapping]]] = ..., loads: _Optional[_Iterable[_Union[_common_pb2.WarehouseLoad, _Mapping]]] = ..., shortages: _Optional[_Iterable[_Union[_common_pb2.Shortage, _Mapping]]] = ...) -> None: ...

class Saga(_message.Message):
    __slots__ = ("saga_id", "request_id", "status", "request", "steps", "allocation", "picklists", "failure", "created_at", "updated_at", "warehouses", "availability", "locks", "trace_id", "compensation_failure", "omitted_fields", "reservation", "cancel_reason", "kind", "transfer", "transfer_state", "transfer_lines")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    PICKLISTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    LOCKS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FAILURE_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_STATE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_LINES_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    request_id: str
    status: SagaStatus
    request: InventoryRequest
    steps: _containers.RepeatedCompositeFieldContainer[StepState]
    allocation: _common_pb2.Allocation
    picklists: _containers.RepeatedCompositeFieldContainer[_common_pb2.Picklist]
    failure: SagaFailure
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    warehouses: _containers.RepeatedCompositeFieldContainer[_common_pb2.Warehouse]
    availability: Availability
    locks: _containers.RepeatedCompositeFieldContainer[_common_pb2.InventoryLock]
    trace_id: str
    compensation_failure: SagaFailure
    omitted_fields: _containers.RepeatedScalarFieldContainer[str]
    reservation: Reservation
    cancel_reason: str
    kind: SagaKind
    transfer: TransferRequest
    transfer_state: TransferState
    transfer_lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.TransferLine]
    def __init__(self, saga_id: _Optional[str] = ..., request_id: _Optional[str] = ..., status: _Optional[_Union[SagaStatus, str]] = ..., request: _Optional[_Union[InventoryRequest, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepState, _Mapping]]] = ..., allocation: _Optional[_Union[_common_pb2.Allocation, _Mapping]] = ..., picklists: _Optional[_Iterable[_Union[_common_pb2.Picklist, _Mapping]]] = ..., failure: _Optional[_Union[SagaFailure, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., warehouses: _Optional[_Iterable[_Union[_common_pb2.Warehouse, _Mapping]]] = ..., availability: _Optional[_Union[Availability, _Mapping]] = ..., locks: _Optional[_Iterable[_Union[_common_pb2.InventoryLock, _Mapping]]] = ..., trace_id: _Optional[str] = ..., compensation_failure: _Optional[_Union[SagaFailure, _Mapping]] = ..., omitted_fields: _Optional[_Iterable[str]] = ..., reservation: _Optional[_Union[Reservation, _Mapping]] = ..., cancel_reason: _Optional[str] = ..., kind: _Optional[_Union[SagaKind, str]] = ..., transfer: _Optional[_Union[TransferRequest, _Mapping]] = ..., transfer_state: _Optional[_Union[TransferState, str]] = ..., transfer_lines: _Optional[_Iterable[_Union[_common_pb2.TransferLine, _Mapping]]] = ...) -> None: ...

class ReceiveTransferRequest(_message.Message):
    __slots__ = ("transfer_id", "lines")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReceivedLine]
    def __init__(self, transfer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_common_pb2.ReceivedLine, _Mapping]]] = ...) -> None: ...

class ReceiveTransferResponse(_message.Message):
    __slots__ = ("saga",)
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga: Saga
    def __init__(self, saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("request_id", "from_warehouse", "to_warehouse", "items", "reason", "expected_arrival", "priority")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    TO_WAREHOUSE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    from_warehouse: str
    to_warehouse: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    reason: str
    expected_arrival: _timestamp_pb2.Timestamp
    priority: int
    def __init__(self, request_id: _Optional[str] = ..., from_warehouse: _Optional[str] = ..., to_warehouse: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., reason: _Optional[str] = ..., expected_arrival: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[int] = ...) -> None: ...

class StartTransferRequest(_message.Message):
    __slots__ = ("transfer",)
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    transfer: TransferRequest
    def __init__(self, transfer: _Optional[_Union[TransferRequest, _Mapping]] = ...) -> None: ...

class StartTransferResponse(_message.Message):
    __slots__ = ("saga_id", "saga")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    saga: Saga
    def __init__(self, saga_id: _Optional[str] = ..., saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class WarehouseReservation(_message.Message):
    __slots__ = ("warehouse_id", "picklist_id", "state", "picklist_status", "updated_at")
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    PICKLIST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PICKLIST_STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    warehouse_id: str
    picklist_id: str
    state: _common_pb2.ReservationState
    picklist_status: _common_pb2.PicklistStatus
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, warehouse_id: _Optional[str] = ..., picklist_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ReservationState, str]] = ..., picklist_status: _Optional[_Union[_common_pb2.PicklistStatus, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("state", "expires_at", "warehouses", "updated_at", "releasing", "allocation_settled")
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASING_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_SETTLED_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.ReservationState
    expires_at: _timestamp_pb2.Timestamp
    warehouses: _containers.RepeatedCompositeFieldContainer[WarehouseReservation]
    updated_at: _timestamp_pb2.Timestamp
    releasing: _common_pb2.ReservationState
    allocation_settled: bool
    def __init__(self, state: _Optional[_Union[_common_pb2.ReservationState, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., warehouses: _Optional[_Iterable[_Union[WarehouseReservation, _Mapping]]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., releasing: _Optional[_Union[_common_pb2.ReservationState, str]] = ..., allocation_settled: _Optional[bool] = ...) -> None: ...

class EventDetail(_message.Message):
    __slots__ = ("code", "message", "attempt", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    attempt: int
    reason: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SagaEvent(_message.Message):
    __slots__ = ("seq", "type", "step", "status", "step_status", "time", "detail", "saga_id", "reservation_state", "warehouse_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEP_STATUS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_STATE_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    type: SagaEventType
    step: str
    status: SagaStatus
    step_status: StepStatus
    time: _timestamp_pb2.Timestamp
    detail: EventDetail
    saga_id: str
    reservation_state: _common_pb2.ReservationState
    warehouse_id: str
    def __init__(self, seq: _Optional[int] = ..., type: _Optional[_Union[SagaEventType, str]] = ..., step: _Optional[str] = ..., status: _Optional[_Union[SagaStatus, str]] = ..., step_status: _Optional[_Union[StepStatus, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[_Union[EventDetail, _Mapping]] = ..., saga_id: _Optional[str] = ..., reservation_state: _Optional[_Union[_common_pb2.ReservationState, str]] = ..., warehouse_id: _Optional[str] = ...) -> None: ...

class StartSagaRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: InventoryRequest
    def __init__(self, request: _Optional[_Union[InventoryRequest, _Mapping]] = ...) -> None: ...

class StartSagaResponse(_message.Message):
    __slots__ = ("saga_id", "saga")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    saga: Saga
    def __init__(self, saga_id: _Optional[str] = ..., saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class GetSagaRequest(_message.Message):
    __slots__ = ("saga_id",)
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    def __init__(self, saga_id: _Optional[str] = ...) -> None: ...

class GetSagaResponse(_message.Message):
    __slots__ = ("saga",)
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga: Saga
    def __init__(self, saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class ListSagasRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token", "order_id", "customer_id", "created_after", "created_before", "reservation_state", "kind")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    status: SagaStatus
    page_size: int
    page_token: str
    order_id: str
    customer_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    reservation_state: _common_pb2.ReservationState
    kind: SagaKind
    def __init__(self, status: _Optional[_Union[SagaStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reservation_state: _Optional[_Union[_common_pb2.ReservationState, str]] = ..., kind: _Optional[_Union[SagaKind, str]] = ...) -> None: ...

class ListSagasResponse(_message.Message):
    __slots__ = ("sagas", "next_page_token")
    SAGAS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sagas: _containers.RepeatedCompositeFieldContainer[Saga]
    next_page_token: str
    def __init__(self, sagas: _Optional[_Iterable[_Union[Saga, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchSagaRequest(_message.Message):
    __slots__ = ("saga_id", "after_seq", "event_types", "follow_reservation")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_RESERVATION_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    after_seq: int
    event_types: _containers.RepeatedScalarFieldContainer[SagaEventType]
    follow_reservation: bool
    def __init__(self, saga_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., event_types: _Optional[_Iterable[_Union[SagaEventType, str]]] = ..., follow_reservation: _Optional[bool] = ...) -> None: ...

class WatchSagaResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: SagaEvent
    def __init__(self, event: _Optional[_Union[SagaEvent, _Mapping]] = ...) -> None: ...

class CancelSagaRequest(_message.Message):
    __slots__ = ("saga_id", "reason", "release_unpicked")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RELEASE_UNPICKED_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    reason: str
    release_unpicked: bool
    def __init__(self, saga_id: _Optional[str] = ..., reason: _Optional[str] = ..., release_unpicked: _Optional[bool] = ...) -> None: ...

class CancelSagaResponse(_message.Message):
    __slots__ = ("saga",)
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga: Saga
    def __init__(self, saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class ResumeSagaRequest(_message.Message):
    __slots__ = ("saga_id",)
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    def __init__(self, saga_id: _Optional[str] = ...) -> None: ...

class ResumeSagaResponse(_message.Message):
    __slots__ = ("saga",)
    SAGA_FIELD_NUMBER: _ClassVar[int]
    saga: Saga
    def __init__(self, saga: _Optional[_Union[Saga, _Mapping]] = ...) -> None: ...

class ExtendReservationRequest(_message.Message):
    __slots__ = ("saga_id", "until")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    until: _timestamp_pb2.Timestamp
    def __init__(self, saga_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExtendReservationResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ...) -> None: ...
