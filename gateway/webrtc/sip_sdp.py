"""SDP for the SIP side of browser calls (plain RTP/AVP), and what an answer means for media. Sans-I/O.

We offer Opus first (so two browsers talk without transcoding), then G.711
for phones, telephone-event at both clock rates, and VP8 video when the
browser sends video. The negotiated codecs decide, per stream, whether the
gateway forwards browser RTP untouched or transcodes Opus <-> G.711.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.sip.sdp import Media, SessionDescription, parse_sdp

Addr = tuple[str, int]
AudioCodec = Literal["opus", "PCMU", "PCMA"]
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

OPUS_PT = 111
TEL_EVENT_48K_PT = 110
TEL_EVENT_8K_PT = 101
VP8_PT = 96
_AUDIO_RATES = {"opus": 48000, "PCMU": 8000, "PCMA": 8000}


@dataclass(frozen=True)
class AudioPlan:
    codec: AudioCodec
    payload_type: int
    clock_rate: int
    telephone_event: int | None  # payload type, if negotiated
    remote: Addr | None

    @property
    def transcoded(self) -> bool:
        return self.codec != "opus"


@dataclass(frozen=True)
class VideoPlan:
    payload_type: int
    remote: Addr | None


@dataclass(frozen=True)
class MediaPlan:
    """What the SIP side agreed: the audio codec, whether video flows, the far end's addresses."""

    audio: AudioPlan
    video: VideoPlan | None
    direction: Direction = "sendrecv"


class SdpRefused(ValueError):
    """The far end's SDP has nothing we can use (488 Not Acceptable Here)."""


def _audio_lines(port: int, codecs: list[tuple[int, str, str]], direction: Direction) -> list[str]:
    lines = [f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt, _, _ in codecs)}"]
    for pt, rtpmap, fmtp in codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    return lines + ["a=ptime:20", f"a={direction}"]


def _video_lines(port: int, pt: int, direction: Direction) -> list[str]:
    return [
        f"m=video {port} RTP/AVPF {pt}",
        f"a=rtpmap:{pt} VP8/90000",
        f"a=rtcp-fb:{pt} nack",
        f"a=rtcp-fb:{pt} nack pli",
        f"a=rtcp-fb:{pt} ccm fir",
        f"a={direction}",
    ]


def _session(address: str, version: int, media: list[str]) -> bytes:
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=seabridge-webrtc {version} {version} IN {family} {address}",
        "s=seabridge",
        f"c=IN {family} {address}",
        "t=0 0",
        *media,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


_OFFERED_AUDIO = [
    (OPUS_PT, "opus/48000/2", "minptime=10;useinbandfec=1"),
    (0, "PCMU/8000", ""),
    (8, "PCMA/8000", ""),
    (TEL_EVENT_48K_PT, "telephone-event/48000", "0-16"),
    (TEL_EVENT_8K_PT, "telephone-event/8000", "0-16"),
]


def build_offer(
    address: str, audio_port: int, video_port: int | None, version: int = 1, direction: Direction = "sendrecv"
) -> bytes:
    media = _audio_lines(audio_port, _OFFERED_AUDIO, direction)
    if video_port is not None:
        media += _video_lines(video_port, VP8_PT, direction)
    return _session(address, version, media)


def plan_from_answer(answer: bytes) -> MediaPlan:
    """Read the far end's answer to ``build_offer``: the codec it chose and where it wants media."""
    sdp = _parse(answer)
    audio = _first(sdp, "audio")
    if audio is None or audio.port == 0:
        raise SdpRefused("the answer refused audio")
    plan = _audio_plan(sdp, audio)
    video_media = _first(sdp, "video")
    video = None
    if video_media is not None and video_media.port != 0:
        pt = _pt_of(video_media, "VP8")
        if pt is not None:
            video = VideoPlan(pt, _endpoint(sdp, video_media))
    return MediaPlan(plan, video, _direction(audio))


def answer_offer(
    offer: bytes, address: str, audio_port: int, video_port: int | None, version: int = 1
) -> tuple[bytes, MediaPlan]:
    """Answer a SIP offer to a browser; ``video_port`` None refuses video (the browser sends none)."""
    sdp = _parse(offer)
    lines: list[str] = []
    plan_audio: AudioPlan | None = None
    video: VideoPlan | None = None
    direction: Direction = "sendrecv"
    for media in sdp.media:
        if media.kind == "audio" and plan_audio is None and media.port != 0:
            plan_audio = _audio_plan(sdp, media, prefer="opus")
            codecs = [(plan_audio.payload_type, _rtpmap(plan_audio.codec), "")]
            if plan_audio.telephone_event is not None:
                codecs.append((plan_audio.telephone_event, f"telephone-event/{plan_audio.clock_rate}", "0-16"))
            direction = _mirror(_direction(media))
            lines += _audio_lines(audio_port, codecs, direction)
        elif media.kind == "video" and video is None and video_port is not None and media.port != 0:
            pt = _pt_of(media, "VP8")
            if pt is None:
                lines += [f"m=video 0 {media.proto} {media.formats[0]}"]
                continue
            video = VideoPlan(pt, _endpoint(sdp, media))
            lines += _video_lines(video_port, pt, _mirror(_direction(media)))
        else:
            lines += [f"m={media.kind} 0 {media.proto} {' '.join(media.formats[:1]) or '0'}"]
    if plan_audio is None:
        raise SdpRefused("the offer has no audio we can use")
    return _session(address, version, lines), MediaPlan(plan_audio, video, direction)


def _parse(data: bytes) -> SessionDescription:
    try:
        return parse_sdp(data)
    except ValueError as exc:
        raise SdpRefused(str(exc)) from None


def _first(sdp: SessionDescription, kind: str) -> Media | None:
    return next((m for m in sdp.media if m.kind == kind), None)


def _endpoint(sdp: SessionDescription, media: Media) -> Addr | None:
    address = sdp.connection_address(media)
    if address is None or media.port == 0 or address in ("0.0.0.0", "::"):
        return None
    return address, media.port


def _pt_of(media: Media, name: str, rate: int | None = None) -> int | None:
    mapping = media.rtpmap()
    for pt in media.formats:
        encoding = mapping.get(pt, "")
        parts = encoding.split("/")
        if parts[0].lower() == name.lower() and (rate is None or (len(parts) > 1 and parts[1] == str(rate))):
            return int(pt)
    return None


def _audio_plan(sdp: SessionDescription, media: Media, prefer: str | None = None) -> AudioPlan:
    # The first codec we know (in an offer the phone's preference, in an answer its choice),
    # unless the offer also has ``prefer``: answering, Opus spares a transcoding.
    mapping = media.rtpmap()
    known: list[tuple[str, int]] = []
    for pt in media.formats:
        name = mapping.get(pt, "").split("/")[0].lower()
        codec = {"opus": "opus", "pcmu": "PCMU", "pcma": "PCMA"}.get(name)
        if codec is not None:
            known.append((codec, int(pt)))
    if not known:
        raise SdpRefused("no common audio codec (we speak Opus, PCMU and PCMA)")
    codec, payload_type = next(((c, p) for c, p in known if c == prefer), known[0])
    rate = _AUDIO_RATES[codec]
    event = _pt_of(media, "telephone-event", rate)
    return AudioPlan(codec, payload_type, rate, event, _endpoint(sdp, media))  # type: ignore[arg-type]


def _rtpmap(codec: AudioCodec) -> str:
    return {"opus": "opus/48000/2", "PCMU": "PCMU/8000", "PCMA": "PCMA/8000"}[codec]


def _direction(media: Media) -> Direction:
    return media.direction  # type: ignore[return-value]


def _mirror(direction: Direction) -> Direction:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)  # type: ignore[return-value]


__all__ = [
    "AudioPlan",
    "Direction",
    "MediaPlan",
    "SdpRefused",
    "VideoPlan",
    "answer_offer",
    "build_offer",
    "plan_from_answer",
]
