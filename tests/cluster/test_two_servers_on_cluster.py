"""The two-servers tests (tests/scenarios/test_two_servers.py) again, on the cluster."""

from test_two_servers import (
    session,
    test_a_block_written_through_one_server_is_served_by_the_other_at_once,
    test_an_image_rendered_by_one_server_is_not_rendered_again_by_the_other,
    test_an_open_gets_the_same_image_from_either_server,
    two_servers,
)

__all__ = [
    "session",
    "test_a_block_written_through_one_server_is_served_by_the_other_at_once",
    "test_an_image_rendered_by_one_server_is_not_rendered_again_by_the_other",
    "test_an_open_gets_the_same_image_from_either_server",
    "two_servers",
]
