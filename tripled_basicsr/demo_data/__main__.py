import sys

from tripled_basicsr.demo_data.cli import main

sys.exit(main())
