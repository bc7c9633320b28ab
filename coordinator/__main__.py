from coordinator.server import build
from invsaga.runtime.server import run_process

run_process("coordinator", build)
