"""Session events (a capped stream per session, resumable by id) and the owners' places among
open event streams."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .errors import TooManyStreams
from .keys import STREAM_LEASE_S, events_key, owner_streams_key
from .records import Event, StoreConfig


class EventLog:
    """The event side of the Store."""

    redis: Redis
    config: StoreConfig
    _open_stream: AsyncScript

    async def events(self, sid: str, after: str, block_ms: int) -> list[Event]:
        """Events after the stream id `after` ("0" for all), waiting up to block_ms."""
        reply = await self.redis.xread(
            {events_key(sid): after},
            count=100,
            block=block_ms or None,  # 0 would wait forever
        )
        if not reply:
            return []
        return [Event(id=i, type=f["type"], data=f["data"]) for i, f in reply[0][1]]

    async def add_event(self, sid: str, type_: str, data: dict[str, Any]) -> None:
        """An event outside the scripts (a note for the client; no state changes with it)."""
        fields = {"type": type_, "data": json.dumps(data)}
        await self.redis.xadd(
            events_key(sid), fields, maxlen=self.config.events_maxlen, approximate=True
        )

    async def open_stream(self, owner: str, stream_id: str, limit: int) -> None:
        """Take (or renew) a place among the owner's open event streams; raises
        TooManyStreams. Renew at least every STREAM_LEASE_S, and close_stream at the end."""
        args = [stream_id, time.time(), STREAM_LEASE_S, limit]
        if not await self._open_stream(keys=[owner_streams_key(owner)], args=args):
            raise TooManyStreams(limit)

    async def close_stream(self, owner: str, stream_id: str) -> None:
        await self.redis.zrem(owner_streams_key(owner), stream_id)
