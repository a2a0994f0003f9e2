"""The progress displays of run, wait and batch submit, driven by a fake clock: what a log
(non-TTY) gets line by line, what a terminal's bars show, and when nothing is printed."""

from __future__ import annotations

import io
import re

import pytest

from flows.progress import (
    LineDisplay,
    NullDisplay,
    RateMeter,
    RichDisplay,
    Row,
    Snapshot,
    format_duration,
    open_display,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_at_most_every_period_a_line_per_milestone_and_the_last_one() -> None:
    clock, out = FakeClock(), io.StringIO()
    display, meter = LineDisplay(out, clock=clock, every_s=10), RateMeter(clock=clock)

    def show(t: float, done: int, **more: object) -> None:
        clock.now = 1000.0 + t
        display.show(Snapshot.of("wait", meter, done=done, total=600, unit="frames", **more))

    show(0, 0, detail="0/3 jobs done, 3 running")
    show(4, 40, detail="0/3 jobs done, 3 running")  # throttled
    show(10, 100, detail="0/3 jobs done, 3 running")
    show(12, 130, detail="1/3 jobs done, 2 running", failures=1, milestone=True)  # a job failed
    show(15, 160, detail="1/3 jobs done, 2 running", failures=1)  # throttled
    display.close()  # the last state is always printed
    display.close()  # once
    assert out.getvalue().splitlines() == [
        "wait: 0/3 jobs done, 3 running; 0/600 frames, 0s elapsed",
        "wait: 0/3 jobs done, 3 running; 100/600 frames, 10.0 frames/s, ETA 50s, 10s elapsed",
        "wait: 1/3 jobs done, 2 running; 130/600 frames, 10.8 frames/s, ETA 43s, 1 failed, "
        "12s elapsed",
        "wait: 1/3 jobs done, 2 running; 160/600 frames, 10.7 frames/s, ETA 41s, 1 failed, "
        "15s elapsed",
    ]


def test_the_run_line_keeps_its_decoded_and_committed_counts() -> None:
    clock, out = FakeClock(), io.StringIO()
    display, meter = LineDisplay(out, clock=clock), RateMeter(clock=clock)
    clock.now += 2
    display.show(
        Snapshot.of(
            "cli", meter, done=5, total=5, unit="frames", detail="5 frames decoded, 5 committed"
        )
    )
    display.close()
    assert out.getvalue() == "cli: 5 frames decoded, 5 committed; 5/5 frames, 2s elapsed\n"


def test_the_rate_follows_the_recent_pace_not_a_resumed_burst() -> None:
    clock = FakeClock()
    meter = RateMeter(clock=clock, window_s=30)
    assert meter.rate(900) is None  # a resumed job: 900 frames were there before
    for t in range(1, 121):  # then 2 frames/s for two minutes
        clock.now += 1
        rate = meter.rate(900 + 2 * t)
    assert rate == pytest.approx(2.0)
    clock.now += 30  # stalled for the whole window
    assert meter.rate(1140) is None
    eta = Snapshot(label="j", done=1000, total=1300, unit="frames", rate=2.0, elapsed_s=0).eta_s
    assert eta == 150


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3599, "59m59s"), (7620, "2h07m")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_terminal_gets_bars_with_rate_eta_failures_and_one_row_per_running_job() -> None:
    clock, out = FakeClock(), Terminal()
    display = RichDisplay(out, clock=clock, auto_refresh=False)
    meter = RateMeter(clock=clock)
    rows = (Row(key="job-a", done=0, total=100), Row(key="job-b", done=0, total=None))
    display.show(Snapshot.of("wait", meter, done=0, total=200, unit="frames", rows=rows))
    clock.now += 10
    rows = (Row(key="job-b", done=40, total=100),)  # job-a ended (failed)
    display.show(
        Snapshot.of("wait", meter, done=40, total=200, unit="frames", rows=rows, failures=1)
    )
    display.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # colours and cursor moves
    last = text[text.rindex("wait") :]
    assert "40/200" in last and "4.0 frames/s" in last and "ETA 40s" in last
    assert "1 failed" in last and "job-b" in last and "40/100" in last
    assert "job-a" not in last  # finished jobs leave the display
    assert "━" in last  # a drawn bar


def test_quiet_prints_nothing_and_pipes_get_plain_lines() -> None:
    assert isinstance(open_display(quiet=True, stream=Terminal()), NullDisplay)
    assert isinstance(open_display(quiet=False, stream=io.StringIO()), LineDisplay)
    terminal = open_display(quiet=False, stream=Terminal())
    assert isinstance(terminal, RichDisplay)
    terminal.close()


def test_run_counts_against_the_frames_expected_once_the_video_is_probed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fractions import Fraction

    from flows.plan import plan_job
    from flows.runcmd import _Progress
    from flows.spec import JobSpec
    from media import VideoInfo

    clock = FakeClock()
    plan = plan_job(
        JobSpec.from_dict({"source": "v.mp4", "job_id": "r", "sampling": {"stride": 2}})
    )
    progress = _Progress("r", quiet=False, plan=plan, clock=clock)  # stderr: not a terminal
    progress(0, 0)
    progress.on_video(
        VideoInfo(
            source="v.mp4",
            container="mp4",
            codec="h264",
            source_width=64,
            source_height=48,
            width=64,
            height=48,
            fps=25.0,
            time_base=Fraction(1, 12800),
            duration_s=4.0,
            frame_count_hint=100,
            rotation=0,
            mirrored=False,
            time_source="pts",
            start_pts=0,
            seekable=True,
        )
    )
    clock.now += 10
    progress(20, 44)
    clock.now += 5
    progress(49, 98, last=True)  # the video held fewer frames than its header said
    progress.end()
    assert capsys.readouterr().err.splitlines() == [
        "r: 0 frames decoded, 0 committed; 0 frames, 0s elapsed",
        "r: 44 frames decoded, 20 committed; 20/50 frames, 2.0 frames/s, ETA 15s, 10s elapsed",
        "r: 98 frames decoded, 49 committed; 49/49 frames, 3.3 frames/s, 15s elapsed",
    ]
