"""Build real wheels of tiny plugin distributions, offline, for install tests.

A wheel is a zip with a ``.dist-info`` folder; writing one by hand needs no build backend
and no network, and ``pip install --target`` then installs it exactly as it would a
distribution from PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def build_wheel(out_dir: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` with ``modules`` and ``critui`` entry points."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {f"{module}.py": source for module, source in modules.items()}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test plugin\n"
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: critui-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = "[critui]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = out_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
