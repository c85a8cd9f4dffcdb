"""The image service called directly, as the CLI would: batched deletion of every image."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import event, func, select

from app.images import service
from app.images.models import Image
from app.state import app_state
from tests.support.helpers import sign_up, sign_up_admin


async def _store(app: FastAPI, owner_id: int, names: list[str]) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        session.add_all(
            Image(
                user_id=owner_id,
                image_url=f"http://127.0.0.1:9/{name}.png",
                content_type="image/png",
            )
            for name in names
        )


async def _urls(app: FastAPI) -> list[str]:
    async with app_state(app).sessionmaker() as session:
        return list((await session.execute(select(Image.image_url).order_by(Image.id))).scalars())


async def test_delete_all_images_removes_every_image_in_batches(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    await _store(app, alice.id, [f"a{n}" for n in range(4)])
    await _store(app, bob.id, [f"b{n}" for n in range(3)])
    statements: list[str] = []
    async with app_state(app).sessionmaker() as session:
        connection = await session.connection()
        sync_engine = connection.engine.sync_engine

        def record(_c: object, _cur: object, statement: str, *_: object) -> None:
            statements.append(statement)

        event.listen(sync_engine, "before_cursor_execute", record)
        try:
            deleted = await service.delete_all_images(session, batch_size=2)
        finally:
            event.remove(sync_engine, "before_cursor_execute", record)
        await session.commit()
    assert deleted == 7
    assert await _urls(app) == []
    # 7 images in batches of 2: four DELETEs, each after the UPDATE of its galleries'
    # versions; the fifth batch finds nothing to delete.
    kinds = [s.lstrip().split()[0].upper() for s in statements]
    assert kinds.count("DELETE") == 4
    assert kinds.count("UPDATE") == 4
    assert all(kinds[i - 1] == "UPDATE" for i, kind in enumerate(kinds) if kind == "DELETE")
    async with app_state(app).sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(Image))).scalar_one() == 0


async def test_delete_all_images_on_an_empty_table_deletes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app_state(app).sessionmaker() as session:
        assert await service.delete_all_images(session, batch_size=2) == 0


async def test_admin_delete_of_every_image_leaves_users_and_new_images_work(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    await _store(app, alice.id, [f"a{n}" for n in range(3)])
    response = await client.delete("/images", headers=admin.headers)
    assert response.status_code == 204, response.text
    assert await _urls(app) == []
    await _store(app, alice.id, ["after"])
    assert await _urls(app) == ["http://127.0.0.1:9/after.png"]
    listing = (await client.get(f"/users/{alice.id}/images")).json()
    assert [image["image_url"] for image in listing["items"]] == ["http://127.0.0.1:9/after.png"]
