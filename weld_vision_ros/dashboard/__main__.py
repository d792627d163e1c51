import sys

from weld_vision_ros.dashboard.server import main

sys.exit(main())
