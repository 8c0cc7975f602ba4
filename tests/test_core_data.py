"""Reading uploads for batch scoring: formats, encodings, column choice, clear refusals."""

from __future__ import annotations

import pytest

from core.data import added_column_names, read_text_table
from core.errors import WorkbenchError
from core.limits import MAX_UPLOAD_BYTES


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_csv_columns_are_read_and_the_text_column_guessed(tmp_path):
    path = write(tmp_path, "reviews.csv", b'id,review,stars\n1,"Great, really great",5\n2,"Bad\nvery bad",1\n')
    table = read_text_table(path)
    assert table.columns == ["id", "review", "stars"]
    assert table.guess_text_column() == "review"
    assert table.texts("review") == ["Great, really great", "Bad\nvery bad"]


def test_without_a_known_name_the_longest_column_is_guessed(tmp_path):
    path = write(tmp_path, "x.tsv", b"n\tsaid\n1\tthe quiet village at dawn\n2\ta long book\n")
    assert read_text_table(path).guess_text_column() == "said"


def test_txt_is_one_text_per_non_empty_line(tmp_path):
    table = read_text_table(write(tmp_path, "lines.txt", b"first line\n\n  \nsecond line\n"))
    assert table.texts("text") == ["first line", "second line"]


def test_bom_and_latin1_files_decode(tmp_path):
    assert read_text_table(write(tmp_path, "bom.csv", "\ufefftext\ncafé\n".encode("utf-8"))).columns == ["text"]
    latin = read_text_table(write(tmp_path, "latin.csv", "text\ncafé crème\n".encode("latin-1")))
    assert latin.texts("text") == ["café crème"] and latin.encoding == "latin-1"


@pytest.mark.parametrize("name, data, message", [
    ("empty.csv", b"", "empty"),
    ("header.csv", b"text\n", "no rows"),
    ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    ("data.xlsx", b"text\nhello\n", "Unsupported file type"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, name, data, message):
    with pytest.raises(WorkbenchError, match=message):
        read_text_table(write(tmp_path, name, data))


def test_a_missing_column_is_named(tmp_path):
    table = read_text_table(write(tmp_path, "a.csv", b"text\nhello\n"))
    with pytest.raises(WorkbenchError, match="no column 'review'"):
        table.texts("review")


def test_files_over_the_size_limit_are_refused(tmp_path):
    path = write(tmp_path, "big.txt", b"a line of text\n" * (MAX_UPLOAD_BYTES // 15 + 10))
    with pytest.raises(WorkbenchError, match="too large"):
        read_text_table(path)


def test_too_many_rows_are_refused(tmp_path):
    path = write(tmp_path, "many.txt", b"row\n" * 11)
    with pytest.raises(WorkbenchError, match="Too many rows: 11"):
        read_text_table(path, max_rows=10)


def tweets_export(count: int = 200) -> bytes:
    """A spreadsheet export of tweets: CRLF line ends, and a lone carriage return inside some
    tweets (a line break pasted into a cell), as real exports carry."""
    rows = ["id,tweet"]
    for number in range(count):
        text = f"tweet {number} about the weather" + ("\rsent from my phone" if number % 7 == 0 else "")
        rows.append(f"{number},{text}")
    return ("\r\n".join(rows) + "\r\n").encode("utf-8")


def test_a_lone_carriage_return_inside_a_line_is_text_not_a_row_break(tmp_path):
    table = read_text_table(write(tmp_path, "tweets.csv", tweets_export(200)))
    assert len(table.rows) == 200
    assert table.texts("id") == [str(number) for number in range(200)]  # every row in its place
    assert table.texts("tweet")[7] == "tweet 7 about the weather sent from my phone"
    assert table.warnings == []


def test_carriage_returns_alone_still_end_lines_in_an_old_mac_file(tmp_path):
    table = read_text_table(write(tmp_path, "old.csv", b"text,n\rfirst,1\rsecond,2\r"))
    assert table.texts("text") == ["first", "second"]


def test_an_unterminated_quote_is_named_and_does_not_swallow_the_rest(tmp_path):
    data = b'id,tweet\n1,fine\n2,"so excited for tonight\n3,next one\n4,"quoted, properly"\n5,last\n'
    table = read_text_table(write(tmp_path, "tweets.csv", data))
    assert table.texts("id") == ["1", "2", "3", "4", "5"]
    assert table.texts("tweet") == ["fine", '"so excited for tonight', "next one", "quoted, properly", "last"]
    assert table.warnings == ['Line 3 of tweets.csv opens a quote (") that is never closed: that line was read '
                              "with its quotes as plain text. Check that row."]


def test_a_first_line_that_looks_like_data_is_said(tmp_path):
    headerless = read_text_table(write(tmp_path, "tweets.csv", b"I loved it,positive\nThe food was cold,negative\n"
                                                                b"Great service,positive\nNot again,negative\n"))
    assert any("The first line of tweets.csv looks like data" in warning and "'positive'" in warning
               for warning in headerless.warnings)
    named = read_text_table(write(tmp_path, "named.csv", b"text,label\nI loved it,positive\nThe food was cold,negative\n"
                                                         b"Great service,positive\n"))
    assert named.warnings == []


def test_rows_with_more_cells_than_the_header_are_said(tmp_path):
    table = read_text_table(write(tmp_path, "shifted.csv", b"text,label\nI loved it, truly,positive\nBad,negative\n"
                                                           b"Fine,neutral,\n"))
    assert table.texts("label") == [" truly", "negative", "neutral"]  # read as written...
    assert any(warning.startswith("1 row has more cells than the header of shifted.csv names (row 1 first)")
               for warning in table.warnings)  # ...and said; an empty trailing cell is no extra cell


def test_added_columns_never_take_a_name_the_file_has():
    assert added_column_names(["label", "score"], ["predicted", "predicted_score"]) == ["predicted", "predicted_score"]
    assert added_column_names(["Predicted", "predicted_2", "x"], ["predicted", "predicted_score"]) == \
        ["predicted_3", "predicted_score"]


def test_sizes_are_said_in_mib(tmp_path):
    path = write(tmp_path, "big.txt", b"a line of text\n" * (MAX_UPLOAD_BYTES // 15 + 10))
    with pytest.raises(WorkbenchError, match=r"too large: 5\.0 MiB \(limit 5 MiB\)"):
        read_text_table(path)
