"""Exception classes. Library code raises these; the CLI and HTTP edges turn them into one clear line."""


class MmsearchError(Exception):
    """Base class for every error mmsearch reports to a user."""


class ConfigError(MmsearchError):
    """A setting or option has a value that cannot work."""


class ImageBackendError(ConfigError):
    """The requested image backend cannot run here (package missing, conversion failed, check against torch failed)."""


class TextBackendError(ConfigError):
    """The requested text backend cannot run here (package missing, conversion failed, check against torch failed)."""


class ModelNotFoundError(MmsearchError):
    """A model spec names no known architecture, weights file or pretrained tag."""


class IndexNotFoundError(MmsearchError):
    """The index directory does not exist or holds no index."""


class IndexCorruptError(MmsearchError):
    """An index file is unreadable or inconsistent."""


class ModelMismatchError(MmsearchError):
    """The index was built with a different model than the one asked for."""


class InvalidQueryError(MmsearchError):
    """A search request cannot be answered as posed (empty text, bad target, bad image...)."""


class PayloadTooLargeError(InvalidQueryError):
    """An uploaded query (image) is larger than the server accepts."""


class ItemNotFoundError(MmsearchError):
    """No item has the requested id."""


class ImageFetchError(InvalidQueryError):
    """An item's image URL was refused (non-public address, too large, not an image...) or could not be fetched."""


class CollectionNotFoundError(ItemNotFoundError):
    """No collection of that name is served here."""


class CollectionExistsError(InvalidQueryError):
    """A collection of that name already exists."""


class IndexBusyError(MmsearchError):
    """Another writer (an index run, a server's writer) holds the index's write lock."""


class SourceError(MmsearchError):
    """A folder or manifest to index cannot be read."""


class DatabaseUnavailableError(MmsearchError):
    """The metadata database (MMSEARCH_DATABASE_URL) cannot be reached or refuses the connection."""


class EngineError(MmsearchError):
    """The distributed indexing engine (Ray) cannot be reached or failed while embedding."""


class KeyNotFoundError(MmsearchError):
    """An API key id names no key (``mmsearch keys revoke``)."""
