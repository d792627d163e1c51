"""`weld-vision`: the package's command line (demo and tools)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

COMMANDS = {
    'demo': ('weld_vision_ros.examples.demo', 'the inspection pipeline on the synthetic camera, scored live'),
    'run': ('weld_vision_ros.bringup', 'the weld-cell nodes in one process, with the launch YAML'),
    'dashboard': ('weld_vision_ros.dashboard.server', 'the operator dashboard in the browser (live, capture, training, models)'),
    'sim': ('weld_vision_ros.simulator.sim_record', 'synthetic datasets (same as weld-sim): sim record --out DIR ...'),
    'commission': ('weld_vision_ros.commission', 'measure a gauge of known size: width/height error and spread'),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in COMMANDS:
        print('usage: weld-vision COMMAND [options]\n\ncommands:')
        for name, (_, text) in COMMANDS.items():
            print(f'  {name:<10} {text}')
        return 0 if argv[:1] in ([], ['-h'], ['--help']) else 2
    import importlib
    return int(importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0)


if __name__ == '__main__':
    sys.exit(main())
