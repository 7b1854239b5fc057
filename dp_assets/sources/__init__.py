"""One module per raw source; ``SOURCES`` is the registry every zone iterates over."""

from dp_assets.sources import customers, meters_vendor_a, meters_vendor_b, tariffs, weather
from dp_assets.sources.base import Source

SOURCES: dict[str, Source] = {
    module.SOURCE.name: module.SOURCE
    for module in (meters_vendor_a, meters_vendor_b, weather, customers, tariffs)
}
