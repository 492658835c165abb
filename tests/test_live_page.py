"""The live webcam page with Streamlit's AppTest, for what runs before the WebRTC component.

streamlit-webrtc needs a real Streamlit runtime (AppTest's is mocked), so the page with the stream running is
tested in a real browser in test_browser_webcam.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

LIVE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Live_webcam.py")
TIMEOUT = 120  # seconds per script run; the test machine can be slow


def test_an_invalid_rtc_configuration_is_reported_not_crashed(predictor, monkeypatch):
    monkeypatch.setenv("FER_RTC_CONFIGURATION", '{"iceServers": "turn:oops"}')
    at = AppTest.from_file(LIVE, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert any("FER_RTC_CONFIGURATION" in e.value and "iceServers" in e.value for e in at.error)
    assert [s.label for s in at.sidebar.slider][:2] == ["Minimum face size (pixels)", "Smoothing strength"]


def test_the_uncertain_policy_is_offered_and_off_by_default(predictor, monkeypatch):
    # The page stops before the WebRTC component (which AppTest cannot run) on a bad RTC configuration; the
    # sidebar with the policy is drawn before that.
    monkeypatch.setenv("FER_RTC_CONFIGURATION", "not json")
    at = AppTest.from_file(LIVE, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    toggle = at.sidebar.toggle(key="live_uncertain_on")
    assert toggle.value is False and not [s for s in at.sidebar.slider if s.key == "live_uncertain_threshold"]
    toggle.set_value(True).run()
    assert not at.exception, at.exception
    # the slider starts at the model's calibrated default without TTA (the live page's), to its 0.05 step
    default = predictor.uncertain_below_for(tta=False)
    assert at.sidebar.slider(key="live_uncertain_threshold").value == pytest.approx(round(default / 0.05) * 0.05)
