"""`mask_password`: no password of a database URL is ever printed (issue 10, item 2)."""

from __future__ import annotations

import pytest

from agentdur.store import mask_password


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db/prod", "postgresql://app:***@db/prod"),
        ("postgresql://app@db/prod?password=s3cret", "postgresql://app@db/prod?password=***"),
        (
            "postgresql://app@db:5433/prod?sslmode=require&PASSWORD=s3cret&application_name=x",
            "postgresql://app@db:5433/prod?sslmode=require&PASSWORD=***&application_name=x",
        ),
        (
            "postgresql://app:one@db/prod?sslpassword=two&password=three",
            "postgresql://app:***@db/prod?sslpassword=***&password=***",
        ),
        ("postgres://app:p@ss@db/prod", "postgres://app:***@db/prod"),
        (
            "host=db user=app password=s3cret dbname=prod",
            "host=db user=app password=*** dbname=prod",
        ),
        ("host=db password = 'se cr\\'et' dbname=prod", "host=db password = *** dbname=prod"),
        # Nothing to hide: unchanged, including parameters that merely end in "password".
        ("postgresql://app@db/prod?sslmode=require", "postgresql://app@db/prod?sslmode=require"),
        ("postgresql://app@db/prod?no_password=1", "postgresql://app@db/prod?no_password=1"),
        ("sqlite:///tmp/agentdur.db", "sqlite:///tmp/agentdur.db"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_password(url) == masked
    assert "s3cret" not in mask_password(url)
