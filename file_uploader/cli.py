"""`python -m file_uploader.cli`: the `file-uploader` command (it lives in client/cli.py)."""

import sys

from .client.cli import main

if __name__ == "__main__":
    sys.exit(main())
