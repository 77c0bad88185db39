"""Big edits never stall the rest: the base64 and JSON of big bodies run in a worker thread,
in slices, and give the same answers, byte for byte, as the one-call versions they replace."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import bigjson, media, offload
from gateway.idempotency import body_hash
from gateway.image_header import data_url_size
from gateway.requests import validate
from gateway.settings import UpstreamSettings
from gateway.sim import SimConfig, create_sim_app
from gateway.upstreams import build_upstream
from tests.conftest import CLIENT_KEY, Gateway, gateway_settings, start_gateway
from tests.helpers import Sim, ThreadServer, data_url

HOOK_WAIT_S = 10
"""How long a breathing slice waits for the loop: only a guard, the loop answers at once."""


def random_png(side: int) -> bytes:
    """A PNG of random pixels: incompressible, so about 3 * side² bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


BIG_PNG = random_png(600)  # about 1 MB: many slices


def has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def slices(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, bool]]]:
    """Each slice boundary of a big step: its thread, and whether an event loop runs there
    (the in-process simulator decodes references on its own loop)."""
    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        offload, "breathe", lambda: seen.append((threading.get_ident(), has_running_loop()))
    )
    yield seen


def off_the_loop(gateway: Gateway, slices: list[tuple[int, bool]]) -> bool:
    """Slices ran in a thread with no event loop, and none on the gateway's loop."""
    threads = {thread for thread, _ in slices}
    return any(not loop for _, loop in slices) and gateway.server.thread.ident not in threads


async def test_small_steps_run_inline_and_big_ones_in_a_worker_thread() -> None:
    here = threading.get_ident()
    small = await offload.run(offload.THRESHOLD - 1, threading.get_ident)
    big = await offload.run(offload.THRESHOLD, threading.get_ident)
    assert small == here
    assert big != here


async def test_the_loop_serves_while_a_big_reference_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check of a big data URL waits, mid-way, for a coroutine of the loop to run: which
    it can only do if the check does not run on (and block) the loop."""
    checking, loop_ran = threading.Event(), threading.Event()
    waited: list[bool] = []

    def breathe() -> None:
        if not checking.is_set():
            checking.set()
            waited.append(loop_ran.wait(HOOK_WAIT_S))

    monkeypatch.setattr(offload, "breathe", breathe)
    url = data_url(BIG_PNG, "image/png")
    body = {"prompt": "x", "input_image": url}
    check = asyncio.create_task(offload.run(len(url), validate, body))
    await asyncio.get_running_loop().run_in_executor(None, checking.wait, HOOK_WAIT_S)
    loop_ran.set()  # runs on the loop, while the check is half-way
    parsed = await check
    assert waited == [True]
    assert [ref.value for ref in parsed.references] == [url]


def test_a_big_json_edit_is_checked_off_the_loop_and_sent_exact(
    gateway: Gateway, sim: Sim, slices: list[tuple[int, bool]]
) -> None:
    url = data_url(BIG_PNG, "image/png")
    response = httpx.post(
        f"{gateway.url}/v1/images/edits",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "flux-2-pro", "prompt": "big", "input_image": url, "input_image_2": url},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert sim.bodies() == [
        {"model": "flux-2-pro", "prompt": "big", "input_image": url, "input_image_2": url}
    ]
    assert off_the_loop(gateway, slices)


def test_a_big_uploaded_file_becomes_its_exact_data_url(
    gateway: Gateway, sim: Sim, slices: list[tuple[int, bool]]
) -> None:
    client = gateway.client()
    client.images.edit(model="flux-2-pro", prompt="upload", image=[BIG_PNG])
    assert sim.bodies() == [
        {"model": "flux-2-pro", "prompt": "upload", "input_image": data_url(BIG_PNG, "image/png")}
    ]
    assert off_the_loop(gateway, slices)


def test_a_big_b64_json_answer_is_the_exact_image_encoded_off_the_loop(
    tmp_path: Path, slices: list[tuple[int, bool]]
) -> None:
    server = ThreadServer(create_sim_app(SimConfig(keys=["big-key"], result_kib=512))).start()
    sim = Sim(server.url, ["big-key"])
    gateway = start_gateway(gateway_settings(sim, tmp_path / "cache"))
    try:
        response = gateway.post(response_format="b64_json")
        (result,) = sim.results()
        delivered = httpx.get(f"{sim.url}/_sim/results/{result['id']}").content
    finally:
        gateway.server.stop()
        sim.close()
        server.stop()
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["data"][0]["b64_json"]) == delivered
    assert len(delivered) > offload.THRESHOLD
    assert off_the_loop(gateway, slices)


def _strict(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@pytest.mark.parametrize("size", [4, 8])
def test_base64_in_slices_decides_as_one_strict_decode(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Every short text of the alphabet, padding, a newline and a non-ASCII letter, cut in
    slices of 4 or 8: valid exactly when one strict decode takes it, to the same bytes."""
    monkeypatch.setattr(media, "SLICE", size)
    head = "data:image/png;base64,"
    texts = itertools.chain.from_iterable(
        itertools.product("AQ=/\né" if n < 7 else "A=", repeat=n) for n in range(11)
    )
    for text in map("".join, texts):
        expected = _strict(text)
        parsed = media.parse_data_url(head + text)
        checked = media.check_data_url(head + text)
        assert (parsed[1] if parsed else None) == expected, text
        assert (checked is not None) == (expected is not None), text
        if expected is not None:
            first = media.data_url_head(head + text, 5)
            assert first is not None and expected.startswith(first), text
            assert len(first) >= min(5, len(expected)), text


def test_base64_of_any_length_is_the_one_call_base64() -> None:
    for size in (
        0,
        1,
        2,
        3,
        media.ENCODE_SLICE - 1,
        media.ENCODE_SLICE,
        3 * media.ENCODE_SLICE + 1,
    ):
        data = os.urandom(size)
        assert media.b64encode(data) == base64.b64encode(data).decode()
        assert media.to_data_url(data, "image/png") == data_url(data, "image/png")


def test_a_data_url_is_sniffed_from_its_first_bytes() -> None:
    url = data_url(BIG_PNG, "image/png")
    assert media.check_data_url(url) == ("image/png", "image/png")
    assert media.check_data_url(data_url(BIG_PNG, "image/jpeg")) == ("image/jpeg", "image/png")
    assert media.check_data_url(url[:-1]) is None
    assert media.check_data_url(url[:1000] + "=" + url[1000:]) is None


def _jpeg_with_big_exif(size: tuple[int, int]) -> bytes:
    """A JPEG whose header (the frame size) comes after 60 KB of EXIF."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    Image.new("RGB", size, (10, 20, 30)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_reference_sizes_come_from_the_header_wherever_it_is() -> None:
    jpeg = _jpeg_with_big_exif((321, 123))
    assert data_url_size(data_url(jpeg, "image/jpeg")) == (321, 123)
    assert data_url_size(data_url(BIG_PNG, "image/png")) == (600, 600)
    webp = io.BytesIO()
    Image.frombytes("RGB", (300, 200), os.urandom(300 * 200 * 3)).save(webp, "WEBP", lossless=True)
    assert data_url_size(data_url(webp.getvalue(), "image/webp")) == (300, 200)


BIG = "data:image/png;base64," + base64.b64encode(os.urandom(100_000)).decode()
JSON_VALUES: list[Any] = [
    {"model": "m", "prompt": "x", "input_image": BIG, "input_image_2": BIG[:-8]},
    {"b": [BIG, {"z": BIG, "a": 1}], "a": 'é\u2028\x00"\\', "c": [], "d": {}, "e": None},
    [BIG, 1, -2.5, True, False, None],
    BIG,
    {BIG: "a big key", "n": BIG},
    {"prompt": "x" * 50_000, "user": "y"},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=range(len(JSON_VALUES)))
def test_big_json_reads_and_writes_as_orjson(value: Any) -> None:
    for sort_keys in (False, True):
        option = orjson.OPT_SORT_KEYS if sort_keys else 0
        assert b"".join(bigjson.pieces(value, sort_keys)) == orjson.dumps(value, option=option)
    raw = orjson.dumps(value)
    assert bigjson.loads(raw)[0] == orjson.loads(raw) == value
    assert bigjson.loads(bytearray(raw))[0] == value


def test_big_json_lifts_only_what_json_carries_as_it_is() -> None:
    escaped = orjson.dumps({"prompt": 'say "hi"\\', "image": BIG, "other": BIG + "\\n"})
    spaced = b'{ "image" :\n "' + BIG.encode() + b'" , "n": [ "' + BIG.encode() + b'" ] }'
    assert bigjson.loads(escaped) == (orjson.loads(escaped), [BIG])  # not the one with "\n"
    assert bigjson.loads(spaced) == (orjson.loads(spaced), [BIG, BIG])
    prompt = orjson.dumps({"prompt": "a lighthouse " * 2000, "image": BIG})
    assert bigjson.loads(prompt) == (orjson.loads(prompt), [BIG])  # spaces: not base64
    control = b'{"image": "' + BIG.encode()[:-10] + b"\x01" + BIG.encode()[-10:] + b'"}'
    broken = [spaced[:-1], spaced + b"x", b'{"a": "' + BIG.encode() + b"}", control]
    for raw in broken:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        with pytest.raises(orjson.JSONDecodeError):
            bigjson.loads(raw)


async def test_the_idempotency_hash_is_that_of_the_canonical_json() -> None:
    """Records stored before pieces were used must still match their requests."""
    png = data_url(BIG_PNG, "image/png")
    parsed = validate({"prompt": "x", "seed": 3, "image": [png, png[:-4] + "AA=="]})
    canonical = {
        "body": parsed.body.model_dump(mode="json", exclude_none=True, exclude={"image", "images"}),
        "references": [ref.value for ref in parsed.references],
    }
    expected = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert await body_hash(parsed) == expected


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "content_length": request.headers.get("content-length"),
            "transfer_encoding": request.headers.get("transfer-encoding"),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def test_a_big_upstream_body_is_sent_in_pieces_with_its_length() -> None:
    server = ThreadServer(Starlette(routes=[Route("/echo", _echo, methods=["POST"])])).start()
    settings = UpstreamSettings(
        name="echo", kind="openai-images", base_url=server.url, keys=["k"], models=["flux-2-pro"]
    )
    upstream = build_upstream(settings)
    body = {"model": "flux-2-pro", "prompt": "x", "input_image": BIG, "input_image_2": BIG}
    expected = orjson.dumps(body)
    try:
        big = await upstream.post_json(f"{server.url}/echo", body, {})
        small = await upstream.post_json(f"{server.url}/echo", {"prompt": "x"}, {})
    finally:
        await upstream.aclose()
        server.stop()
    assert big.json() == {
        "content_length": str(len(expected)),
        "transfer_encoding": None,
        "sha256": hashlib.sha256(expected).hexdigest(),
    }
    assert small.json()["sha256"] == hashlib.sha256(b'{"prompt":"x"}').hexdigest()


def test_big_data_urls_that_are_not_base64_are_refused_by_name(gateway: Gateway) -> None:
    whole = data_url(BIG_PNG[: len(BIG_PNG) // 3 * 3], "image/png")  # no padding
    for bad in (whole + "A", whole[:5000] + "*" + whole[5000:], whole + "=" * 9 + "A"):
        response = httpx.post(
            f"{gateway.url}/v1/images/edits",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "flux-2-pro", "prompt": "x", "input_image_2": whole, "input_image": bad},
            timeout=60,
        )
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": "'input_image' is not a valid data:image/(png|jpeg|webp);base64 URL.",
            "type": "invalid_request_error",
            "param": "input_image",
            "code": "invalid_value",
        }
