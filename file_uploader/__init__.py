"""file_uploader: an aiohttp gateway that streams users' files into S3."""

__version__ = "0.1.0"
