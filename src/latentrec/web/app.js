// The page keeps the visitor's ratings in localStorage and asks the service for the rest.
"use strict";
const STORE = "latentrec.ratings";
const $ = (id) => document.getElementById(id);
let ratings = JSON.parse(localStorage.getItem(STORE) || "{}");  // item_id -> {title, rating}

function save() {
  localStorage.setItem(STORE, JSON.stringify(ratings));
  renderRated();
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `request failed (${response.status})`);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => (k === "class" ? (node.className = v) : node.setAttribute(k, v)));
  children.forEach((c) => node.append(c));
  return node;
}

function stars(itemId, title) {
  const box = el("span", { class: "stars", role: "group", "aria-label": `Rate ${title}` });
  for (let value = 1; value <= 5; value++) {
    const on = ratings[itemId] && ratings[itemId].rating >= value;
    const star = el("button", { type: "button", class: on ? "on" : "", "aria-label": `${value} stars`, "data-value": value }, "★");
    star.addEventListener("click", () => {
      ratings[itemId] = { title, rating: value };
      save();
      box.querySelectorAll("button").forEach((b) => b.classList.toggle("on", Number(b.dataset.value) <= value));
    });
    box.append(star);
  }
  return box;
}

function titleButton(itemId, title) {
  const button = el("button", { type: "button", class: "title" }, title || String(itemId));
  button.addEventListener("click", () => showSimilar(itemId, title));
  return button;
}

function renderRated() {
  const list = $("rated");
  list.replaceChildren();
  const entries = Object.entries(ratings);
  entries.forEach(([id, { title }]) => list.append(el("li", {}, titleButton(id, title), stars(id, title))));
  $("rated-count").textContent = entries.length ? `(${entries.length})` : "";
  $("recommend").disabled = entries.length === 0;
}

async function search(event) {
  event.preventDefault();
  const query = $("search").value.trim();
  if (!query) return;
  const list = $("results");
  list.replaceChildren();
  try {
    const items = await api(`/items?query=${encodeURIComponent(query)}&limit=10`);
    if (!items.length) list.append(el("li", {}, "No title matches."));
    items.forEach((item) => list.append(el("li", {}, titleButton(item.item_id, item.title), stars(String(item.item_id), item.title))));
  } catch (error) {
    list.append(el("li", {}, error.message));
  }
}

async function recommend() {
  const list = $("recommendations");
  list.replaceChildren();
  $("status").textContent = "Thinking…";
  const body = {
    ratings: Object.entries(ratings).map(([id, r]) => ({ item_id: /^\d+$/.test(id) ? Number(id) : id, rating: r.rating })),
    k: 10,
  };
  try {
    const recs = await api("/recommendations", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    recs.forEach((rec) => {
      const because = (rec.because || []).map((b) => b.title).filter(Boolean);
      const meta = el("span", { class: "meta" }, because.length ? `Because you rated ${because.join(" and ")}` : "");
      list.append(el("li", {}, titleButton(rec.item_id, rec.title), el("span", { class: "score" }, rec.score.toFixed(2)), meta));
    });
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = error.message;
  }
}

async function showSimilar(itemId, title) {
  $("similar-section").hidden = false;
  $("similar-name").textContent = title || itemId;
  const list = $("similar");
  list.replaceChildren();
  try {
    const items = await api(`/items/${encodeURIComponent(itemId)}/similar?k=10`);
    items.forEach((item) => list.append(el("li", {}, titleButton(item.item_id, item.title), stars(String(item.item_id), item.title))));
  } catch (error) {
    list.append(el("li", {}, error.message));
  }
  $("similar-section").scrollIntoView({ behavior: "smooth" });
}

$("search-form").addEventListener("submit", search);
$("recommend").addEventListener("click", recommend);
$("clear").addEventListener("click", () => { ratings = {}; save(); });
renderRated();
