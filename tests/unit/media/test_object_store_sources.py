"""Object-store URLs whose fsspec package is missing fail in one line that says what to
install (the S3 path itself is tested against moto's server in tests/integration/s3)."""

from __future__ import annotations

import importlib.util

import pytest

from media import UnreadableMediaError, probe_video


@pytest.mark.parametrize(
    ("url", "package"), [("gs://b/clip.mp4", "gcsfs"), ("az://c/clip.mp4", "adlfs")]
)
def test_a_missing_fsspec_backend_is_named_with_its_install(url: str, package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(UnreadableMediaError) as caught:
        probe_video(url, max_side=None, threads=1, open_timeout_s=1, read_timeout_s=1)
    assert str(caught.value) == (
        f"cannot open video {url!r}: reading {url[:2]}:// URLs needs {package}; install with: "
        f"pip install {package}"
    )
