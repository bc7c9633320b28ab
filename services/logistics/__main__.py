from invsaga.runtime.server import run_process
from services.logistics.server import build

run_process("logistics", build)
