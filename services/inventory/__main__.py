from invsaga.runtime.server import run_process
from services.inventory.server import build

run_process("inventory", build)
