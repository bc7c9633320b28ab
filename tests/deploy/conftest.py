from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.kube import OVERLAYS, prepare_tree, render


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The manifests of base, dev and prod, each rendered once per test session."""
    tree = prepare_tree(tmp_path_factory.mktemp("deploy"))
    out = {"base": render(tree / "base")}
    for overlay in OVERLAYS:
        out[overlay] = render(tree / "overlays" / overlay)
    return out
