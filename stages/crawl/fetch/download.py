"""A bounded, polite, size-capped HTTP downloader (httpx, asyncio).

At most ``concurrency`` downloads at once and ``per_host_concurrency`` per host,
request starts per host spaced by ``1 / per_host_rate`` seconds. Timeouts, dropped
connections, 5xx, 408 and 429 are retried with exponential backoff; other 4xx are
final. Redirects are followed by hand so every hop passes the safety policy again.
Bodies are streamed and abandoned as soon as they pass ``max_bytes``.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from stages.crawl.fetch.images import Limits, Rejected, content_type_ok
from stages.crawl.fetch.safety import Policy, Target, UnsafeURL, check_url

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class Failure(Exception):
    """A download that will not succeed; the message is the failure-log reason."""


class Retryable(Exception):
    """A failed attempt that may succeed when tried again."""


@dataclass(frozen=True)
class FetchConfig:
    timeout_s: float
    deadline_s: float
    retries: int
    backoff_s: float
    max_redirects: int
    max_bytes: int
    user_agent: str
    concurrency: int
    per_host_concurrency: int
    per_host_rate: float

    @classmethod
    def from_params(cls, crawl) -> "FetchConfig":
        return cls(**{name: getattr(crawl, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Fetched:
    url: str             # what was asked for
    final_url: str       # after redirects
    body: bytes
    content_type: str


class HostGate:
    """Per-host politeness: a concurrency cap and a minimum spacing of request starts."""

    def __init__(self, concurrency: int, rate: float):
        self.slots = asyncio.Semaphore(concurrency)
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_start = 0.0

    async def __aenter__(self):
        await self.slots.acquire()
        if self.interval:
            now = asyncio.get_running_loop().time()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
            if start > now:
                await asyncio.sleep(start - now)
        return self

    async def __aexit__(self, *exc):
        self.slots.release()


def _pinned(target: Target) -> tuple[str, dict, dict]:
    """URL, headers and extensions that connect to the checked address, not a fresh lookup."""
    if target.address is None:
        return target.url, {}, {}
    url = httpx.URL(target.url)
    default_port = 443 if url.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    return str(url.copy_with(host=target.address)), {"Host": host_header}, {"sni_hostname": target.host}


class Downloader:
    def __init__(self, cfg: FetchConfig, policy: Policy, limits: Limits):
        self.cfg, self.policy, self.limits = cfg, policy, limits
        self.gates: dict[str, HostGate] = {}
        # Bounds requests on the wire, not items: one waiting out a backoff holds no slot.
        self.slots = asyncio.Semaphore(cfg.concurrency)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.timeout_s), follow_redirects=False, trust_env=False,
            headers={"User-Agent": cfg.user_agent, "Accept": "image/*"},
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> Fetched:
        """Download ``url`` with retries, or raise Failure with one reason."""
        try:
            return await asyncio.wait_for(self._with_retries(url), self.cfg.deadline_s)
        except asyncio.TimeoutError:
            raise Failure(f"deadline of {self.cfg.deadline_s:g}s exceeded") from None

    async def _with_retries(self, url: str) -> Fetched:
        attempts = self.cfg.retries + 1
        for attempt in range(attempts):
            try:
                return await self._follow(url)
            except Retryable as err:
                if attempt + 1 == attempts:
                    raise Failure(f"{err} (after {attempts} attempts)") from None
                await asyncio.sleep(self.cfg.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    async def _follow(self, url: str) -> Fetched:
        """One attempt: follow up to max_redirects hops, re-checking each."""
        seen = set()
        current = url
        for _hop in range(self.cfg.max_redirects + 1):
            if current in seen:
                raise Failure(f"redirect loop at {current}")
            seen.add(current)
            try:
                target = await asyncio.to_thread(check_url, current, self.policy) \
                    if not self.policy.allow_private else check_url(current, self.policy)
            except UnsafeURL as err:
                raise Failure(f"unsafe URL: {err} ({current})") from None
            result = await self._request(target)
            if isinstance(result, Fetched):
                return Fetched(url, current, result.body, result.content_type)
            current = urljoin(current, result)
        raise Failure(f"too many redirects (> {self.cfg.max_redirects})")

    async def _request(self, target: Target) -> Fetched | str:
        """Fetched, or the Location of a redirect."""
        request_url, headers, extensions = _pinned(target)
        gate = self.gates.setdefault(target.host, HostGate(self.cfg.per_host_concurrency,
                                                            self.cfg.per_host_rate))
        async with gate, self.slots:
            try:
                async with self.client.stream("GET", request_url, headers=headers,
                                              extensions=extensions) as response:
                    return await self._read(response)
            except httpx.TimeoutException:
                raise Retryable("timeout") from None
            except httpx.TransportError as err:
                raise Retryable(f"connection error: {type(err).__name__}") from None

    async def _read(self, response: httpx.Response) -> Fetched | str:
        status = response.status_code
        if 300 <= status < 400 and status != 304:
            location = response.headers.get("location")
            if not location:
                raise Failure(f"http {status} without Location")
            return location
        if status in RETRY_STATUS:
            raise Retryable(f"http {status}")
        if status != 200:
            raise Failure(f"http {status}")
        try:
            content_type = content_type_ok(response.headers.get("content-type"), self.limits)
        except Rejected as err:
            raise Failure(str(err)) from None
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.cfg.max_bytes:
            raise Failure(f"too large: Content-Length {declared} > {self.cfg.max_bytes} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.cfg.max_bytes:
                raise Failure(f"too large: body passed {self.cfg.max_bytes} bytes")
        return Fetched("", "", bytes(body), content_type)
