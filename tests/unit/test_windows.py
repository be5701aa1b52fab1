import pytest

from batchgate.core.errors import InvalidRequestError
from batchgate.core.windows import parse_completion_window


@pytest.mark.parametrize(
    ("window", "seconds"), [("24h", 86400), ("30m", 1800), ("1h", 3600), ("72h", 259200), ("90s", 90), ("2d", 172800)]
)
def test_durations(window: str, seconds: int) -> None:
    assert parse_completion_window(window) == seconds


@pytest.mark.parametrize("window", ["", "24", "h", "0h", "-1h", "1w", "1.5h", None])
def test_invalid(window: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_completion_window(window)
    assert info.value.param == "completion_window"


def test_longer_than_a_year_is_refused() -> None:
    assert parse_completion_window("365d") == 365 * 86400
    for window in ("366d", "999999999999999d"):
        with pytest.raises(InvalidRequestError):
            parse_completion_window(window)
