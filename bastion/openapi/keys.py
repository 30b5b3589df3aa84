"""The keys the OpenAPI loader adds to each operation, read by the input and response stages.

Values only, so that the stages can read a loaded operation without importing the loader (which sits above
them: it reads YAML through `bastion.config.loader`).
"""

REFS_KEY = "x-bastion-refs"  # the `$ref` targets the operation's schemas use, resolved once at load
VERSION_KEY = "x-bastion-oas"  # the document's OpenAPI major version ("3.0" or "3.1")
