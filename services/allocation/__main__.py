from invsaga.runtime.server import run_process
from services.allocation.server import build

run_process("allocation", build)
