from temporalio.testing import WorkflowEnvironment

from timetravel.store import Database


def test_migrate_twice(db: Database) -> None:
    assert not db.migrate().changed


async def test_dev_server_up(env: WorkflowEnvironment) -> None:
    assert (await env.client.service_client.check_health()) is not None
