from invsaga.runtime.server import run_process
from services.warehouse.server import build

run_process("warehouse", build)
