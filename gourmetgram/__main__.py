import sys

from gourmetgram.cli import main

sys.exit(main())
