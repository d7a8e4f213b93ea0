"""The report page's Jinja2 template: one HTML file, its style and its sorting script inline."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; }
  table { border-collapse: collapse; margin: 0.5em 0 1em; }
  th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
  th.sortable { cursor: pointer; background: #f2f2f2; }
  th.sortable:hover { background: #e4e4e4; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  img.thumb { width: {{ side }}px; height: {{ side }}px; image-rendering: pixelated; margin-right: 4px; }
  .metrics td { min-width: 6em; }
  .bad { background: #fde8e8; } .good { background: #e8f6e8; }
  ul.refs { margin: 0; padding-left: 1.2em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% for section in sections %}
{% set groups = breakdowns[loop.index0] %}
<h2 id="{{ section.task }}">{{ section.task }} &mdash; {{ section.rows | length }} examples</h2>
<table class="metrics">
  <tr>{% for name in section.metrics %}<th>{{ name }}</th>{% endfor %}</tr>
  <tr>{% for value in section.metrics.values() %}<td class="num">{{ "%.2f" | format(value) }}</td>{% endfor %}</tr>
</table>
{% if groups %}
<table class="breakdown">
  <tr><th>group</th><th>examples</th><th>mean {{ section.score_name }}</th></tr>
  {% for name, count, mean in groups %}
  <tr><td>{{ name }}</td><td class="num">{{ count }}</td><td class="num">{{ "%.2f" | format(mean) }}</td></tr>
  {% endfor %}
</table>
{% endif %}
<table class="examples" data-task="{{ section.task }}">
  <thead><tr>
    <th class="sortable" data-key="index">#</th>
    <th class="sortable" data-key="id">id</th>
    <th>image</th>
    <th class="sortable" data-key="inputs">prefix / question</th>
    <th>references</th>
    <th class="sortable" data-key="prediction">prediction</th>
    <th class="sortable" data-key="score">{{ section.score_name or "score" }}</th>
  </tr></thead>
  <tbody>
  {% for row in section.rows %}
  <tr data-index="{{ row.index }}" data-id="{{ row.id }}" data-inputs="{{ row.inputs }}"
      data-prediction="{{ row.prediction }}" data-score="{{ '' if row.score is none else row.score }}"
      class="{% if row.score is not none %}{{ 'good' if row.score >= 50 else 'bad' }}{% endif %}">
    <td class="num">{{ row.index }}</td>
    <td>{{ row.id }}</td>
    <td>{% for image in row.images %}<img class="thumb" src="{{ image }}" alt="image {{ loop.index }}">{% endfor %}
        {% for heat in row.attention -%}
        <img class="thumb attention" src="{{ heat }}" alt="attention {{ loop.index }}">
        {%- endfor %}</td>
    <td>{{ row.inputs }}</td>
    <td><ul class="refs">{% for reference in row.references %}<li>{{ reference }}</li>{% endfor %}</ul></td>
    <td>{{ row.prediction }}</td>
    <td class="num">{{ "" if row.score is none else "%.1f" | format(row.score) }}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
{% endfor %}
<script>
// Click a header to sort its table by that column; click again to reverse. Rows start worst first.
document.querySelectorAll("table.examples").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (header) {
    header.addEventListener("click", function () {
      var key = header.dataset.key;
      var ascending = header.dataset.order !== "ascending";
      header.dataset.order = ascending ? "ascending" : "descending";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var numeric = key === "index" || key === "score";
      rows.sort(function (a, b) {
        var x = a.dataset[key], y = b.dataset[key];
        if (numeric) {
          x = x === "" ? Infinity : parseFloat(x);
          y = y === "" ? Infinity : parseFloat(y);
          return ascending ? x - y : y - x;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>
</body>
</html>
"""
