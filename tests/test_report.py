"""One report model, two renderings: the same rows, the same limit, escaped HTML."""

from components.infra.report import Report, Section, Table, render_html, render_markdown


def sample() -> Report:
    report = Report("a report", lead=[("bad", "NOT blessed: accuracy <0.5>")])
    section = report.add(Section("Rows", empty="None."))
    section.say("every row is in rows.csv")
    section.tables.append(Table(["file", "p"], [[f"img{i}|x.png", i / 10] for i in range(7)], 3))
    report.add(Section("Nothing", tables=[Table(["a"], [])], empty="None at all."))
    report.add(Section("Picture", picture=b"\x89PNG", picture_alt="a plot", in_markdown=False))
    return report


def test_both_formats_show_the_same_rows_up_to_the_limit():
    html, markdown = render_html(sample()), render_markdown(sample())
    for text in (html, markdown):
        assert "img0" in text and "img2" in text and "img3" not in text
        assert "The first 3 of 7 rows" in text
        assert "None at all." in text and "every row is in rows.csv" in text
    assert "| img0\\|x.png | 0.0000 |" in markdown  # a pipe in a cell does not break the table
    assert "<td>0.2000</td>" in html


def test_html_is_escaped_and_self_contained_markdown_has_no_pictures():
    html, markdown = render_html(sample()), render_markdown(sample())
    assert "accuracy &lt;0.5&gt;" in html and "<0.5>" not in html
    assert 'src="data:image/png;base64,iVBORw=="' in html
    assert "## Picture" not in markdown and "**NOT blessed: accuracy <0.5>**" in markdown
    assert "\x1b[" not in html + markdown
