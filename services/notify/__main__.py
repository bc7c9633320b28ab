from invsaga.runtime.server import run_process
from services.notify.server import build

run_process("notify", build)
