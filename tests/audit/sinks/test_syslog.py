"""RFC 5424 framing of the syslog sink (octet counting, RFC 6587 §3.4.1)."""

from __future__ import annotations

import re

from bastion.audit.sinks.syslog import SyslogSink, severity_of


def test_frame_is_octet_counted_rfc5424():
    sink = SyslogSink("s", "127.0.0.1", 514, app_name="bastion", facility=13)
    frame = sink.frame(b'{"class_uid":6003,"status_id":2}\n')
    length, _, record = frame.partition(b" ")
    assert int(length) == len(record)
    assert re.fullmatch(rb"<108>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ bastion \d+ audit - "
                        rb'\{"class_uid":6003,"status_id":2\}', record)  # 13*8 + 4 (warning: a denial)


def test_severity_follows_the_event():
    assert severity_of(b'{"class_uid":2004}') == 1
    assert severity_of(b'{"class_uid":6003,"status_id":2}') == 4
    assert severity_of(b'{"class_uid":6003,"status_id":1}') == 6
