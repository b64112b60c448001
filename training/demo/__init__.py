"""`vip5-demo`: the main job in one command, from the embedded data to a trained, evaluated, documented VIP5 model.

Rooms: `config` (the settings), `steps` (one function per step), `runner` (the run and its thread policy), `record`
(what a run records), `report` (tables, plots and `report.md`), `cli` (the flags).
"""

from .cli import main, parse_args, run
from .config import DemoConfig
from .runner import run_demo

__all__ = ["DemoConfig", "main", "parse_args", "run", "run_demo"]
