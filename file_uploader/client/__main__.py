"""`python -m file_uploader.client`: the `file-uploader` command, for a checkout without the script.

The client is a room of its own (`client/`), so it is run by its own name:
`python -m file_uploader` is the server and its admin commands.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
