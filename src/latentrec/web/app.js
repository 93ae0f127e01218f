// The page keeps the visitor's ratings in localStorage and asks the service for the rest; when
// the service keeps visitors' ratings (GET /health's "visitors"), the ratings live there instead
// (POST /ratings, GET /me/ratings, DELETE /me; a cookie the page never reads says whose they are).
// Ids stay exactly as the service sent them (a number, or a string for ids a JavaScript number
// cannot hold); they are never converted with Number() or parseInt.
"use strict";
const STORE = "latentrec.ratings";
const JSON_BODY = { "Content-Type": "application/json" };
const $ = (id) => document.getElementById(id);
let ratings = readStore();  // String(item_id) -> {id: item_id as received, title, rating}
let scale = [1, 2, 3, 4, 5];  // the rating values the stars give, lowest first; see loadScale
let predictsRatings = true;  // a ranking model's scores only order items: not shown as stars
let kept = false;  // whether the service keeps the ratings (else this browser's localStorage does)

function readStore() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORE) || "{}");
    return stored && typeof stored === "object" && !Array.isArray(stored) ? stored : {};
  } catch {
    return {};
  }
}

function save() {
  if (!kept) localStorage.setItem(STORE, JSON.stringify(ratings));
  renderRated();
}

// The service's list replaces the page's: the same in every tab, and after localStorage is
// cleared. Ratings this browser kept before the service kept any are sent to it once.
async function loadKept() {
  let body = await api("/me/ratings");
  const local = Object.entries(readStore());
  if (!body.ratings.length && local.length) {
    const sent = local.map(([key, r]) => ({ item_id: r.id === undefined ? key : r.id, rating: r.rating }));
    try {
      await api("/ratings", { method: "POST", headers: JSON_BODY, body: JSON.stringify({ ratings: sent }) });
      localStorage.removeItem(STORE);
      body = await api("/me/ratings");
    } catch (error) {
      $("rated-status").textContent = `The ratings kept in this browser were not sent: ${error.message}`;
    }
  }
  ratings = {};
  body.ratings.forEach((r) => (ratings[String(r.item_id)] = { id: r.item_id, title: r.title, rating: r.rating }));
}

async function rate(itemId, title, value) {
  if (kept) {
    const body = { ratings: [{ item_id: itemId, rating: value }] };
    await api("/ratings", { method: "POST", headers: JSON_BODY, body: JSON.stringify(body) });
  }
  ratings[String(itemId)] = { id: itemId, title, rating: value };
  save();
}

async function forget() {
  try {
    const { deleted } = await api("/me", { method: "DELETE" });
    localStorage.removeItem(STORE);
    ratings = {};
    save();
    $("recommendations").replaceChildren();
    $("status").textContent = `Forgotten: ${deleted} stored rating${deleted === 1 ? "" : "s"} deleted.`;
  } catch (error) {
    $("rated-status").textContent = error.message;
  }
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

// The star values for the model's scale: its whole numbers when there are 2 to 10 of them
// (0.5..5 gives 1..5, 1..10 gives 1..10, -2..2 gives -2..2), otherwise even steps from the
// lowest rating to the highest.
function scaleValues(low, high) {
  const first = Math.ceil(low);
  const count = Math.floor(high) - first + 1;
  if (count >= 2 && count <= 10) return Array.from({ length: count }, (_, i) => first + i);
  if (!(high > low)) return [low];
  const steps = count > 10 ? 10 : 5;
  return Array.from({ length: steps }, (_, i) => {
    if (i === 0) return low;
    if (i === steps - 1) return high;
    return Math.min(high, Math.max(low, Number((low + (i * (high - low)) / (steps - 1)).toPrecision(3))));
  });
}

// A rating model's score is a predicted rating; a ranking model's only orders the list, so the
// page shows the paired rating model's prediction for it where the service has one.
function scoreLabel(rec) {
  if (predictsRatings) return el("span", { class: "score", title: "predicted rating" }, `${rec.score.toFixed(2)} ★`);
  if (rec.predicted !== null && rec.predicted !== undefined) {
    return el("span", { class: "score", title: "predicted rating (from the rating model)" }, `${rec.predicted.toFixed(2)} ★`);
  }
  return el("span", { class: "score", title: "ranking score: orders the list, not a rating" }, `score ${rec.score.toFixed(2)}`);
}

async function loadScale() {
  try {
    const health = await api("/health");
    const [low, high] = health.rating_range;
    predictsRatings = health.predicts_ratings !== false;
    kept = health.visitors === true;
    scale = scaleValues(low, high);
    $("scale").textContent = `Ratings go from ${low} to ${high}.`;
    $("kept").hidden = !kept;
    $("forget").hidden = !kept;
    $("clear").hidden = kept;
  } catch (error) {
    $("status").textContent = error.message;
  }
}

function stars(itemId, title) {
  const key = String(itemId);
  const box = el("span", { class: "stars", role: "group", "aria-label": `Rate ${title || key}` });
  scale.forEach((value) => {
    const on = ratings[key] && ratings[key].rating >= value;
    const star = el("button", { type: "button", class: on ? "on" : "", title: String(value), "aria-label": `rating ${value}`, "data-value": value }, "★");
    star.addEventListener("click", async () => {
      try {
        await rate(itemId, title, value);
        $("rated-status").textContent = "";
        box.querySelectorAll("button").forEach((b, i) => b.classList.toggle("on", scale[i] <= value));
      } catch (error) {
        $("rated-status").textContent = error.message;
      }
    });
    box.append(star);
  });
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
  entries.forEach(([key, { id, title }]) => {
    const itemId = id === undefined ? key : id;  // entries saved before ids were kept
    list.append(el("li", {}, titleButton(itemId, title), stars(itemId, title)));
  });
  $("rated-count").textContent = entries.length ? `(${entries.length})` : "";
  $("recommend").disabled = entries.length === 0;
}

async function search(event) {
  event.preventDefault();
  const query = $("search").value.trim();
  if (!query) return;
  const list = $("results");
  list.replaceChildren();
  await scaleLoaded;
  try {
    const items = await api(`/items?query=${encodeURIComponent(query)}&limit=10`);
    if (!items.length) list.append(el("li", {}, "No title matches."));
    items.forEach((item) => list.append(el("li", {}, titleButton(item.item_id, item.title), stars(item.item_id, item.title))));
  } catch (error) {
    list.append(el("li", {}, error.message));
  }
}

async function recommend() {
  const list = $("recommendations");
  list.replaceChildren();
  $("status").textContent = "Thinking…";
  const body = {
    // the id as the service sent it; a key alone (older entries) is a string the service reads
    ratings: Object.entries(ratings).map(([key, r]) => ({ item_id: r.id === undefined ? key : r.id, rating: r.rating })),
    k: 10,
  };
  try {
    const recs = kept
      ? await api("/me/recommendations?k=10")
      : await api("/recommendations", { method: "POST", headers: JSON_BODY, body: JSON.stringify(body) });
    recs.forEach((rec) => {
      const because = (rec.because || []).map((b) => b.title).filter(Boolean);
      const meta = el("span", { class: "meta" }, because.length ? `Because you rated ${because.join(" and ")}` : "");
      list.append(el("li", {}, titleButton(rec.item_id, rec.title), scoreLabel(rec), meta));
    });
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = error.message;
  }
}

async function showSimilar(itemId, title) {
  $("similar-section").hidden = false;
  $("similar-name").textContent = title || String(itemId);
  const list = $("similar");
  list.replaceChildren();
  try {
    const items = await api(`/items/${encodeURIComponent(itemId)}/similar?k=10`);
    items.forEach((item) => list.append(el("li", {}, titleButton(item.item_id, item.title), stars(item.item_id, item.title))));
  } catch (error) {
    list.append(el("li", {}, error.message));
  }
  $("similar-section").scrollIntoView({ behavior: "smooth" });
}

$("search-form").addEventListener("submit", search);
$("recommend").addEventListener("click", recommend);
$("clear").addEventListener("click", () => { ratings = {}; save(); });
$("forget").addEventListener("click", forget);

// the kept list as the service has it now: on load, and whenever the tab is shown again
async function refreshKept() {
  if (!kept) return;
  $("rated-status").textContent = "";
  try {
    await loadKept();
  } catch (error) {
    $("rated-status").textContent = error.message;
  }
  renderRated();
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshKept();
});
const scaleLoaded = loadScale();
scaleLoaded.then(refreshKept).then(renderRated);
