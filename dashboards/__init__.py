"""Grafana dashboards as code. The generated JSON and the provisioning files ship inside this
package (in a checkout: the source tree), so an installed copy finds them from any directory."""

from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(str(resources.files(__name__)))
JSON_DIR = PACKAGE_DIR / "json"  # what `ioc dashboards build` writes and `--check` compares
PROVISIONING_DIR = PACKAGE_DIR / "provisioning"
