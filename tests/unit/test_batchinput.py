"""The batch input reader on real files written to disk: dialects, encodings, nasty cells, bounds, streaming."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from taskdeck.batchinput import MAX_CELL_CHARS, MAX_ROW_CHARS, Row, Table, TableError, read_table
from taskdeck.batchinput_text import CHUNK, MAX_NOTES_EACH


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(path: Path, **options: Any) -> tuple[Table, list[Row]]:
    table = read_table(path, **options)
    return table, list(table.rows())


def values(rows: list[Row]) -> list[dict[str, Any]]:
    return [row.values for row in rows]


def error(path: Path, **options: Any) -> str:
    with pytest.raises(TableError) as caught:
        read(path, **options)
    return caught.value.message


class CountingFile(io.FileIO):
    """A real file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data or b"")
        return data or b""


class Unseekable(io.BytesIO):
    """A stream that can only be read forward, like a socket or a pipe."""

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


# ---------------------------------------------------------------------------------------------------------------
# CSV dialects, line ends, encodings


def test_a_utf8_byte_order_mark_is_removed_with_a_warning(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "bom.csv", b"\xef\xbb\xbfname,city\nAcme,Paris\n"))
    assert table.columns == ["name", "city"]  # not "\ufeffname"
    assert values(rows) == [{"name": "Acme", "city": "Paris"}]
    assert table.warnings == ["the file started with a byte-order mark (removed)"]
    assert table.encoding == "UTF-8"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path: Path, encoding: str) -> None:
    text = "name;city\r\nZoë;Kraków\r\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":  # Python's utf-16-be writes no mark: add it
        data = b"\xfe\xff" + data
    table, rows = read(write(tmp_path, "wide.csv", data))
    assert values(rows) == [{"name": "Zoë", "city": "Kraków"}]
    assert table.encoding == encoding[:6].upper()
    assert table.delimiter == ";"


def test_quoted_newlines_stay_in_their_cell_and_later_rows_keep_their_line(tmp_path: Path) -> None:
    data = b'name,address,n\r\nAcme,"1 Main St\r\nSpringfield",1\n"Glo\nbex","a ""quoted"" word",2\nInitech,x,3\n'
    _, rows = read(write(tmp_path, "newlines.csv", data))
    assert values(rows) == [
        {"name": "Acme", "address": "1 Main St\r\nSpringfield", "n": "1"},
        {"name": "Glo\nbex", "address": 'a "quoted" word', "n": "2"},
        {"name": "Initech", "address": "x", "n": "3"},
    ]
    assert [row.line for row in rows] == [2, 4, 6]
    assert [row.index for row in rows] == [0, 1, 2]


@pytest.mark.parametrize(
    ("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")], ids=lambda v: v
)
def test_each_dialect_is_sniffed_and_quoted_delimiters_stay_in_the_cell(
    tmp_path: Path, delimiter: str, name: str
) -> None:
    d = delimiter
    lines = [f"company{d}note{d}size", f'Acme{d}"one{d} two, three; four"{d}10', f"Globex{d}plain{d}20"]
    table, rows = read(write(tmp_path, f"{name}.csv", "\n".join(lines) + "\n"))
    assert table.delimiter == delimiter
    assert table.columns == ["company", "note", "size"]
    assert values(rows) == [
        {"company": "Acme", "note": f"one{d} two, three; four", "size": "10"},
        {"company": "Globex", "note": "plain", "size": "20"},
    ]


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"], ids=["CRLF", "LF", "CR"])
def test_every_line_end_gives_the_same_rows_and_lines(tmp_path: Path, end: str) -> None:
    text = end.join(["id,name", "1,Acme", "2,Globex", "3,Initech"]) + end
    _, rows = read(write(tmp_path, "ends.csv", text))
    assert values(rows) == [{"id": str(i), "name": n} for i, n in [(1, "Acme"), (2, "Globex"), (3, "Initech")]]
    assert [row.line for row in rows] == [2, 3, 4]


def test_a_crlf_split_across_two_chunks_is_one_line_end(tmp_path: Path) -> None:
    first = "id,name\r\n1," + "x" * (CHUNK - len("id,name\r\n1,") - 1)  # the \r is the chunk's last byte
    _, rows = read(write(tmp_path, "split.csv", first + "\r\n2,y\r\n"))
    assert values(rows) == [{"id": "1", "name": "x" * len(first.split(",")[-1])}, {"id": "2", "name": "y"}]
    assert [row.line for row in rows] == [2, 3]


def test_unicode_cells_and_names_are_kept_exactly(tmp_path: Path) -> None:
    family, arabic, hebrew, combining = "👩\u200d👩\u200d👧", "القاهرة", "שָׁלוֹם", "e\u0301te\u0301"  # not NFC
    text = f"név,città,🏷️\n{family},{arabic},{combining}\n{hebrew},\u202eevil,🇫🇷\n"
    table, rows = read(write(tmp_path, "unicode.csv", text))
    assert table.columns == ["név", "città", "🏷️"]
    assert values(rows) == [
        {"név": family, "città": arabic, "🏷️": combining},
        {"név": hebrew, "città": "\u202eevil", "🏷️": "🇫🇷"},
    ]


def test_a_single_column_file_is_read(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "one.csv", "company\nAcme Corporation\nGlobex\n"))
    assert table.columns == ["company"]
    assert values(rows) == [{"company": "Acme Corporation"}, {"company": "Globex"}]
    assert table.warnings == []  # a text header over text rows is not doubted


def test_a_first_row_that_looks_like_data_is_still_the_header_with_a_warning(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "noheader.csv", "1,2\n3,4\n5,6\n"))
    assert table.columns == ["1", "2"]
    assert values(rows) == [{"1": "3", "2": "4"}, {"1": "5", "2": "6"}]
    assert len(table.warnings) == 1
    assert "does not look like a header" in table.warnings[0] and "add a header row" in table.warnings[0]


# ---------------------------------------------------------------------------------------------------------------
# Headers, empty rows, short and long rows


def test_empty_and_duplicate_headers_are_made_unique_with_warnings(tmp_path: Path) -> None:
    text = "name, ,name,name_2,name,\nA,B,C,D,E,F\n"
    table, rows = read(write(tmp_path, "headers.csv", text))
    # name_2 is a real column later on, so the second "name" cannot take it
    assert table.columns == ["name", "column_2", "name_3", "name_2", "name_4", "column_6"]
    assert values(rows) == [dict(zip(table.columns, "ABCDEF", strict=True))]
    assert table.warnings == [
        "column 2 had no name; called it column_2",
        "two columns were named 'name'; the second is now 'name_3'",
        "3 columns were named 'name'; the third is now 'name_4'",
        "column 6 had no name; called it column_6",
    ]


def test_header_names_are_stripped_but_cells_are_not(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "spaces.csv", " name ,city\n  Acme  , Paris\n"))
    assert table.columns == ["name", "city"]
    assert values(rows) == [{"name": "  Acme  ", "city": " Paris"}]


def test_empty_rows_are_skipped_with_a_warning_and_take_no_index(tmp_path: Path) -> None:
    text = "id,name\n\n1,Acme\n,\n   ,  \n2,Globex\n\n\n"  # the two blank lines at the end pass unremarked
    table, rows = read(write(tmp_path, "empty_rows.csv", text))
    assert values(rows) == [{"id": "1", "name": "Acme"}, {"id": "2", "name": "Globex"}]
    assert [(row.index, row.line, row.record) for row in rows] == [(0, 3, 2), (1, 6, 5)]
    assert table.row_count == 2
    assert table.warnings == [
        "line 2 was empty and was skipped",
        "line 4 was empty and was skipped",
        "line 5 was empty and was skipped",
    ]


def test_many_warnings_of_one_kind_are_summed_up(tmp_path: Path) -> None:
    text = "id,name\n" + "".join(f"{i},x\n,\n" for i in range(100))
    table, rows = read(write(tmp_path, "many_empty.csv", text))
    assert len(rows) == 100
    assert table.warnings[:MAX_NOTES_EACH] == [f"line {3 + 2 * i} was empty and was skipped" for i in range(10)]
    assert table.warnings[MAX_NOTES_EACH:] == [f"… and {99 - MAX_NOTES_EACH:,} more rows were empty and were skipped"]


def test_a_short_row_is_padded_with_empty_cells_and_a_warning(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "short.csv", "a,b,c\n1,2,3\n4\n"))
    assert values(rows) == [{"a": "1", "b": "2", "c": "3"}, {"a": "4", "b": "", "c": ""}]
    assert table.warnings == ["line 3 has 1 cell for 3 columns; the missing ones are empty"]


def test_empty_cells_past_the_last_column_are_ignored_with_a_warning(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "trailing.csv", "a;b\n1;2;;\n3;4\n"))
    assert values(rows) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert table.warnings == ["line 2 has 2 cells past the last column, empty; ignored"]


def test_extra_cells_with_values_are_an_error_naming_the_line(tmp_path: Path) -> None:
    message = error(write(tmp_path, "extra.csv", "name,city\nAcme,Paris\nAcme, Inc,Lyon\n"))
    assert message.startswith("line 3 has 3 cells but there are 2 columns (the first extra cell is 'Lyon')")
    assert "must be in double quotes" in message


def test_a_malformed_quote_is_an_error_naming_the_line(tmp_path: Path) -> None:
    message = error(write(tmp_path, "badquote.csv", 'a,b\n1,2\n3,"x"y\n'))
    assert message.startswith("line 3: a quoted cell is not closed properly")
    assert 'must be doubled ("")' in message


def test_a_quote_never_closed_is_an_error_naming_where_it_opened(tmp_path: Path) -> None:
    message = error(write(tmp_path, "open.csv", 'a,b\n1,2\n3,"never closed\n4,5\n'))
    assert message == 'the file ends inside the quoted cell that starts on line 3: a quote (") is never closed'


def test_a_nul_byte_is_an_error_not_a_table(tmp_path: Path) -> None:
    message = error(write(tmp_path, "nul.csv", b"a,b\n1,2\n3,\x004\n"))
    assert message == "line 3 holds a NUL character: this looks like a binary file, not a table"


# ---------------------------------------------------------------------------------------------------------------
# Errors: empty, header only, encoding, bounds


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\xef\xbb\xbf", "the file is empty"),
        (b" \r\n\n\t\n", "the file is empty: it holds only blank lines and spaces"),
    ],
    ids=["no bytes", "only a byte-order mark", "only whitespace"],
)
def test_an_empty_file_is_an_error(tmp_path: Path, data: bytes, message: str) -> None:
    assert error(write(tmp_path, "empty.csv", data)) == message


def test_a_header_without_rows_is_an_error(tmp_path: Path) -> None:
    assert error(write(tmp_path, "header.csv", "name,city\r\n")) == (
        "the file has a header row (name, city) but no rows under it"
    )


def test_a_header_over_only_empty_rows_is_an_error(tmp_path: Path) -> None:
    assert error(write(tmp_path, "blank.csv", "name,city\n,\n , \n,\n")) == (
        "every row under the header (name, city) is empty (3 skipped); a table needs at least one row"
    )


def test_invalid_utf8_is_an_error_naming_the_byte_and_line(tmp_path: Path) -> None:
    data = b"name,city\nAcme,Paris\nZo\xeb,Berlin\n"  # Latin-1 ë
    message = error(write(tmp_path, "latin1.csv", data))
    assert message == (
        "the file is not valid UTF-8 text: it has a byte that is not UTF-8 at byte 23 (line 3). "
        "Save it as UTF-8 (in Excel: 'CSV UTF-8')"
    )
    assert data[23:24] == b"\xeb"


def test_invalid_utf8_deep_in_the_file_names_its_true_offset(tmp_path: Path) -> None:
    head = "id,name\n" + "".join(f"{i},é{i}\n" for i in range(20_000))  # well past the first chunk
    data = head.encode() + b"bad,\xc3(\n"
    message = error(write(tmp_path, "late.csv", data))
    assert f"at byte {len(head.encode()) + 4:,} (line 20002)" in message


def test_invalid_utf8_just_after_a_character_split_between_chunks_names_its_byte(tmp_path: Path) -> None:
    head = b"a\n" + b"x" * (CHUNK - 3)  # then "é" takes the last byte of the first chunk and the first of the next
    data = head + "é".encode() + b"\xff\n"
    message = error(write(tmp_path, "split_char.csv", data))
    assert f"at byte {CHUNK + 1:,} (line 2)" in message
    assert data[CHUNK + 1 : CHUNK + 2] == b"\xff"


def test_a_file_cut_inside_a_character_is_an_error(tmp_path: Path) -> None:
    message = error(write(tmp_path, "cut.csv", "a,b\n1,é".encode()[:-1]))
    assert message.startswith("the file is not valid UTF-8 text: it ends in the middle of a character at byte 6")


def test_more_rows_than_the_limit_is_an_error_not_a_cut(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", "n\n" + "".join(f"{i}\n" for i in range(1, 6)))
    assert read(path, limit_rows=5)[0].row_count == 5
    assert error(path, limit_rows=4) == (
        "the file has more than 4 rows, the most allowed here (line 6 is row 5); split the file"
    )


def test_a_cell_over_the_limit_is_an_error_naming_line_and_column(tmp_path: Path) -> None:
    ok = "x" * MAX_CELL_CHARS
    path = write(tmp_path, "cell_ok.csv", f"a,big\n1,{ok}\n")
    assert read(path)[1][0].values["big"] == ok
    message = error(write(tmp_path, "cell.csv", f"a,big\n1,2\n3,{ok}y\n"))
    assert message == f"line 3, column 'big': the cell has {MAX_CELL_CHARS + 1:,} characters; the limit is 100,000"


def test_a_cell_over_csvs_own_field_limit_gets_the_same_kind_of_message(tmp_path: Path) -> None:
    message = error(write(tmp_path, "huge.csv", 'a,b\n1,"' + "y" * 200_000 + '"\n'))
    assert message.startswith("the row starting at line 2 has a cell longer than 100,000 characters")


def test_a_quote_never_closed_in_a_big_file_stops_at_the_cell_limit(tmp_path: Path) -> None:
    # Without a bound csv would gather the whole rest of the file into one cell.
    rows = "".join(f"{i},plain text\n" for i in range(100_000))
    message = error(write(tmp_path, "runaway.csv", 'a,b\n1,"oops\n' + rows))
    assert message == (
        "the row starting at line 2 has a cell longer than 100,000 characters; "
        'often a quote (") that opens a cell and is never closed'
    )


def test_a_row_longer_than_the_limit_is_refused_before_it_is_held(tmp_path: Path) -> None:
    # Short cells on one endless line: no cell is too long, the row is.
    row = "1," + "z," * (MAX_ROW_CHARS // 2 + 10)
    message = error(write(tmp_path, "wide_row.csv", "a,b\n" + row + "\n2,3\n"))
    assert message.startswith(f"the row starting at line 2 is longer than {MAX_ROW_CHARS:,} characters")


def test_a_missing_file_is_a_table_error(tmp_path: Path) -> None:
    assert error(tmp_path / "nope.csv").startswith(f"cannot open {tmp_path / 'nope.csv'}: No such file")


# ---------------------------------------------------------------------------------------------------------------
# JSON and JSON Lines


def test_a_json_array_keeps_values_and_collects_columns_in_order(tmp_path: Path) -> None:
    items: list[dict[str, Any]] = [
        {"name": "Acme", "tags": ["b2b", "saas"], "hq": {"city": "Paris", "geo": [48.8, 2.3]}, "n": 3},
        {"name": "Globex", "public": True, "score": 1.5, "n": None},
        {"extra": "only here", "name": "Initech"},
    ]
    table, rows = read(write(tmp_path, "t.json", json.dumps(items, indent=2)))
    assert table.kind == "json"
    assert table.columns == ["name", "tags", "hq", "n", "public", "score", "extra"]
    assert values(rows) == [
        {**dict.fromkeys(table.columns), **items[0]},
        {**dict.fromkeys(table.columns), **items[1]},
        {**dict.fromkeys(table.columns), **items[2]},
    ]
    assert list(rows[2].values) == table.columns  # every row in column order
    assert type(rows[1].values["public"]) is bool and type(rows[0].values["n"]) is int
    assert [(row.record, row.line, row.where) for row in rows] == [
        (1, 2, "item 1 (line 2)"),
        (2, 17, "item 2 (line 17)"),
        (3, 23, "item 3 (line 23)"),
    ]


def test_json_items_larger_than_a_chunk_are_read_whole(tmp_path: Path) -> None:
    items = [{"i": i, "text": f"{i}-" + "é" * (CHUNK + 17 * i)} for i in range(5)]
    _, rows = read(write(tmp_path, "wide.json", json.dumps(items, ensure_ascii=False)))
    assert values(rows) == items


def test_an_empty_json_object_is_an_empty_row(tmp_path: Path) -> None:
    data = '[{"a": 1}, {}, {"a": null, "b": " "}, {"a": [], "b": {}}, {"a": 2}, {"a": [{}]}]'
    table, rows = read(write(tmp_path, "e.json", data))
    assert values(rows) == [{"a": 1, "b": None}, {"a": 2, "b": None}, {"a": [{}], "b": None}]
    assert table.warnings == [f"item {n} (line 1) was empty and was skipped" for n in (2, 3, 4)]


def test_a_json_key_with_no_name_gets_a_column_name(tmp_path: Path) -> None:
    table, rows = read(write(tmp_path, "k.json", '[{"a": 1, "": 2}]'))
    assert table.columns == ["a", "column_2"]
    assert values(rows) == [{"a": 1, "column_2": 2}]
    assert table.warnings == ["the key '' in item 1 (line 1) had no name; called it column_2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1},\n {"a": NaN}]', "item 2 (line 2): NaN is not JSON (RFC 8259 has no NaN or Infinity)"),
        ('[{"a": 1, "a": 2}]', "item 1 (line 1): the key 'a' appears twice in one object"),
        ('[{"a": 1e999}]', "item 1 (line 1): the number 1e999 is too large to be a finite number"),
        ('[{"a": "\\u0000"}]', "item 1 (line 1) at a: contains a NUL character"),
        ('[{"a": 1},\n\n {"a": tru}]', "item 2 (line 3) is not valid JSON: Expecting value (line 3, column 8)"),
        ('[{"a": 1}, "Acme"]', "item 2 (line 1) is a string, not an object"),
        ('[{"a": 1},]', "line 1: a comma before ']'; JSON allows no trailing comma"),
        ('[{"a": 1}] []', "line 1: there is more after the array's closing ']'"),
        ('[{"a": 1} {"a": 2}]', "line 1: expected ',' or ']' after item 1 (line 1), found '{'"),
        ('[{"a": 1},\n{"a": 2}', "line 2: expected ',' or ']' after item 2 (line 2), found the end of the file"),
        ("[]", "the JSON array is empty; a table needs at least one object in it"),
        ("[" + "[" * 100_000, "item 1 (line 1) nests too deeply"),
        ("[" + '{"a":' * 70 + "1" + "}" * 70 + "]", "item 1 (line 1): nests deeper than 64 levels"),
    ],
    ids=[
        "NaN",
        "duplicate key",
        "infinite number",
        "NUL",
        "syntax",
        "not an object",
        "trailing comma",
        "extra data",
        "missing comma",
        "unclosed",
        "empty",
        "too deep for Python",
        "too deep for jsonbody",
    ],
)
def test_strict_json_errors_name_the_item_and_line(tmp_path: Path, text: str, message: str) -> None:
    assert error(write(tmp_path, "bad.json", text)).startswith(message)


def test_a_json_error_is_found_without_reading_the_rest_of_the_file(tmp_path: Path) -> None:
    good = ",".join(json.dumps({"i": i, "pad": "p" * 100}) for i in range(20_000))
    path = write(tmp_path, "early.json", '[{"a": tru},' + good + "]")
    with CountingFile(path) as stream:
        with pytest.raises(TableError, match=r"item 1 \(line 1\) is not valid JSON: Expecting value"):
            read_table(stream)
        assert stream.bytes_read <= 2 * CHUNK < path.stat().st_size // 10


def test_a_json_object_file_is_not_a_table(tmp_path: Path) -> None:
    message = error(write(tmp_path, "obj.json", '{"rows": [\n  {"a": 1}\n]}'))
    assert message.startswith("line 1 is not valid JSON")
    assert "JSON Lines holds one whole object on each line" in message
    message = error(write(tmp_path, "obj2.json", '{"rows": []}'), kind="json")
    assert message.startswith("a JSON table is an array of objects") and "use JSON Lines" in message


def test_json_lines_skip_blank_lines_and_count_them_in_line_numbers(tmp_path: Path) -> None:
    text = '{"a": 1, "b": [1, {"c": 2}]}\r\n\n   \n{"b": "x"}\n{}\n{"a": 3}'
    table, rows = read(write(tmp_path, "t.jsonl", text))
    assert table.kind == "jsonl"
    assert table.columns == ["a", "b"]
    assert values(rows) == [{"a": 1, "b": [1, {"c": 2}]}, {"a": None, "b": "x"}, {"a": 3, "b": None}]
    assert [(row.line, row.record) for row in rows] == [(1, 1), (4, 2), (6, 4)]
    assert table.warnings == ["line 5 was empty and was skipped"]


def test_a_bad_json_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    text = '{"a": 1}\n\n{"a": 2}\n{"a": 3,}\n{"a": 4}\n'
    assert error(write(tmp_path, "bad.jsonl", text)) == (
        "line 4 is not valid JSON: Expecting property name enclosed in double quotes (column 9)"
    )
    assert error(write(tmp_path, "arr.jsonl", '{"a": 1}\n[1, 2]\n')) == (
        'line 2 is an array, not an object; each row must be an object like {"name": "Acme"}'
    )
    assert error(write(tmp_path, "dup.jsonl", '{"a": 1}\n{"a": 1, "a": 1}\n')) == (
        "line 2: the key 'a' appears twice in one object"
    )


def test_a_json_value_over_the_cell_limit_is_an_error(tmp_path: Path) -> None:
    big = {"nested": ["x" * (MAX_CELL_CHARS // 2), "y" * (MAX_CELL_CHARS // 2)]}
    message = error(write(tmp_path, "big.jsonl", json.dumps({"a": 1}) + "\n" + json.dumps(big) + "\n"))
    assert message == f"line 2, 'nested': the value has {MAX_CELL_CHARS + 7:,} characters; the limit is 100,000"


def test_kind_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "brackets.txt", "[tag],name\n[x],Acme\n")
    assert error(path).startswith("item 1 (line 1) is not valid JSON")  # auto: looks like a JSON array
    table, rows = read(path, kind="csv")
    assert table.kind == "csv" and values(rows) == [{"[tag]": "[x]", "name": "Acme"}]


# ---------------------------------------------------------------------------------------------------------------
# Streaming, digest, sources


def big_csv(tmp_path: Path, rows: int = 10_000, words: int = 20) -> Path:
    lines = ["id,company,website,notes"]
    lines += [f'{i},Company {i},https://example-{i}.com,"{"lorem, ipsum " * words}{i}"' for i in range(rows)]
    return write(tmp_path, "big.csv", "\r\n".join(lines) + "\r\n")


def test_a_10000_row_csv_is_checked_in_one_pass_and_then_read_row_by_row(tmp_path: Path) -> None:
    path = big_csv(tmp_path)
    size = path.stat().st_size
    assert size > 40 * CHUNK
    with CountingFile(path) as stream:
        table = read_table(stream)
        assert table.row_count == 10_000
        assert stream.bytes_read == size  # the checking pass read every byte once
        stream.bytes_read = 0
        rows = table.rows()
        first = next(rows)
        assert first.values == {
            "id": "0",
            "company": "Company 0",
            "website": "https://example-0.com",
            "notes": "lorem, ipsum " * 20 + "0",
        }
        assert stream.bytes_read <= CHUNK  # one chunk for the first row, not the file
        rest = list(rows)
        assert stream.bytes_read == size
    assert [row.index for row in rest] == list(range(1, 10_000))
    assert rest[-1].values["id"] == "9999" and rest[-1].line == 10_001


def test_reading_a_big_table_holds_a_small_fraction_of_it_in_memory(tmp_path: Path) -> None:
    path = big_csv(tmp_path, rows=2_000, words=100)  # few wide rows: tracemalloc's cost is per allocation
    size = path.stat().st_size
    assert size > 2_500_000
    tracemalloc.start()
    try:
        table = read_table(path)
        first_pass = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        count = sum(1 for _ in table.rows())
        second_pass = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 2_000
    assert first_pass < size / 4 and second_pass < size / 4, (first_pass, second_pass, size)


def test_a_big_json_array_is_read_one_item_at_a_time(tmp_path: Path) -> None:
    items = [{"id": i, "name": f"Company {i}", "tags": ["a", "b"], "note": "lorem " * 40} for i in range(4_000)]
    path = write(tmp_path, "big.json", json.dumps(items, indent=1))
    with CountingFile(path) as stream:
        table = read_table(stream)
        stream.bytes_read = 0
        rows = table.rows()
        assert next(rows).values == items[0]
        assert stream.bytes_read <= CHUNK < path.stat().st_size // 20
        assert [row.values for row in rows] == items[1:]


def test_the_digest_is_the_sha256_of_the_bytes_and_changes_with_one_byte(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfname,city\r\nAcme,Paris\r\n"
    one = read_table(write(tmp_path, "a.csv", data))
    same = read_table(io.BytesIO(data))
    other = read_table(write(tmp_path, "b.csv", data.replace(b"Paris", b"Parys")))
    assert one.digest == same.digest == hashlib.sha256(data).hexdigest()  # the BOM counts: raw bytes
    assert other.digest != one.digest


def test_the_digest_covers_the_whole_of_a_big_file(tmp_path: Path) -> None:
    path = big_csv(tmp_path, rows=3_000)
    data = path.read_bytes()
    assert read_table(path).digest == hashlib.sha256(data).hexdigest()
    changed = data[:-10] + (b"X" if data[-10:-9] != b"X" else b"Y") + data[-9:]
    assert read_table(write(tmp_path, "c.csv", changed)).digest != hashlib.sha256(data).hexdigest()


def test_a_stream_is_read_from_where_it_stands_and_rewound_for_the_rows(tmp_path: Path) -> None:
    data = b"a,b\n1,2\n3,4\n"
    stream = io.BytesIO(b"PREFIX" + data)
    stream.seek(6)
    table = read_table(stream)
    assert table.digest == hashlib.sha256(data).hexdigest()
    assert values(list(table.rows())) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert values(list(table.rows())) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]  # again, from the start


def test_a_stream_that_cannot_seek_is_copied_once_and_read_again(tmp_path: Path) -> None:
    data = "id\n" + "".join(f"{i}\n" for i in range(1, 5001))
    stream = Unseekable(data.encode())
    with read_table(stream) as table:
        assert table.digest == hashlib.sha256(data.encode()).hexdigest()
        assert [row.values["id"] for row in table.rows()] == [str(i) for i in range(1, 5001)]
        assert [row.values["id"] for row in table.rows()][-1] == "5000"
    with pytest.raises(ValueError, match="closed"):
        table.rows()


def test_a_file_changed_after_the_check_is_an_error_when_its_rows_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a,b\n1,2\n3,4\n")
    table = read_table(path)
    path.write_bytes(b"a,b\n1,2\n3,5\n")  # same size, one byte
    with pytest.raises(TableError, match="the file changed after it was checked; read it again"):
        list(table.rows())
    path = write(tmp_path, "t.jsonl", '{"a": 1}\n')
    table = read_table(path)
    path.write_text('{"b": 1}\n')  # a column the check never saw
    with pytest.raises(TableError, match="the file changed after it was checked"):
        list(table.rows())


def test_bad_arguments_are_programming_errors_not_table_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a\n1\n")
    with pytest.raises(ValueError, match="kind must be") as caught:
        read_table(path, kind="xlsx")  # type: ignore[arg-type]
    assert not isinstance(caught.value, TableError)
    with pytest.raises(ValueError, match="limit_rows"):
        read_table(path, limit_rows=0)
