"""The Lua scripts of the store, one file each under lua/, read once per process.

Each script touches the keys of one session only, except two that must be atomic across keys:
create.lua (admission: the owner's keys, the model's job stream and the new sessions) and
requeue.lua (a session and its model's job stream).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def source(name: str) -> str:
    return files(__package__).joinpath("lua", f"{name}.lua").read_text()


def register(redis: Redis, name: str) -> AsyncScript:
    return redis.register_script(source(name))
