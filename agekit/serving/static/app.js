// agekit's web page: send one photo to POST /v1/predict and draw the answer on a canvas.
// Drawn here in the browser from the API's JSON (not a server-drawn image): the page shows exactly what
// the API returned, needs no second endpoint or image re-encoding, and stays sharp at any display size.
"use strict";

const COLORS = { female: "rgb(235, 87, 87)", male: "rgb(47, 128, 237)", none: "rgb(39, 174, 96)" }; // as agekit/inference/draw.py
const MAX_SIDE = 1600; // the canvas never gets bigger than this (huge photos are drawn scaled down)
const $ = (id) => document.getElementById(id);
let lastUrl = null;

function setState(state) { document.body.dataset.state = state; }

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

async function showModel() {
  try {
    const r = await fetch("/v1/models");
    const m = (await r.json()).models[0];
    const level = m.interval_level ? `${Math.round(m.interval_level * 100)}%` : null;
    $("model").textContent = `${m.model_name} · ${m.backend}` + (level ? ` · ${level} age interval` : "");
    if (level) $("interval-head").textContent = `${level} interval`;
  } catch (e) {
    $("model").textContent = "";
  }
}

function loadImage(file) {
  // The browser decodes the photo itself (with its EXIF rotation, as the server does); null if it cannot.
  return new Promise((resolve) => {
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = lastUrl;
  });
}

// The same text as FaceResult.label: "30 (20-40) F 0.94"
function label(f) {
  let t = f.age.toFixed(0);
  if (f.age_low != null && f.age_high != null) t += ` (${f.age_low.toFixed(0)}-${f.age_high.toFixed(0)})`;
  if (f.gender) t += ` ${f.gender[0].toUpperCase()} ${f.gender_prob.toFixed(2)}`;
  return t;
}

function draw(rec, img) {
  const canvas = $("canvas");
  const k = Math.min(1, MAX_SIDE / Math.max(rec.width, rec.height));
  canvas.width = Math.max(1, Math.round(rec.width * k));
  canvas.height = Math.max(1, Math.round(rec.height * k));
  const ctx = canvas.getContext("2d");
  if (img) {
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  } else {
    ctx.fillStyle = "#ccc";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  const side = Math.max(canvas.width, canvas.height);
  const lw = Math.max(2, Math.round(side / 250));
  const fontPx = Math.max(12, Math.round(side / 32));
  ctx.font = `600 ${fontPx}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const f of rec.faces) {
    const color = COLORS[f.gender] || COLORS.none;
    const [x0, y0, x1, y1] = f.box.map((v) => v * k);
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.fillStyle = "#fff";
    for (const [x, y] of f.landmarks) {
      ctx.beginPath();
      ctx.arc(x * k, y * k, lw, 0, 2 * Math.PI);
      ctx.fill();
    }
    const text = label(f);
    const tw = ctx.measureText(text).width + 8;
    const th = fontPx + 6;
    const ty = y0 - th >= 0 ? y0 - th : y1; // above the box, or below it at the top edge
    ctx.fillStyle = color;
    ctx.fillRect(x0 - lw / 2, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x0 + 4 - lw / 2, ty + 3);
  }
}

function fill(rec) {
  const body = $("faces").tBodies[0];
  body.replaceChildren();
  rec.faces.forEach((f, i) => {
    const tr = body.insertRow();
    tr.className = "face";
    const cells = [
      String(i),
      f.age.toFixed(1),
      f.age_low != null && f.age_high != null ? `${f.age_low.toFixed(0)}–${f.age_high.toFixed(0)}` : "–",
      f.gender || "–",
      f.gender_prob != null ? f.gender_prob.toFixed(2) : "–",
      f.box.map((v) => v.toFixed(0)).join(", "),
    ];
    cells.forEach((text, j) => {
      const td = tr.insertCell();
      td.textContent = text;
      td.className = ["index", "age", "interval", "gender", "prob", "box"][j] + (j === 1 || j === 4 ? " num" : "");
    });
  });
  $("json").textContent = JSON.stringify(rec, null, 2);
}

async function send(file) {
  if (!file) return;
  setState("busy");
  setStatus(`Estimating ${file.name} …`);
  const form = new FormData();
  form.append("file", file, file.name);
  let resp, rec;
  try {
    resp = await fetch("/v1/predict", { method: "POST", body: form });
    rec = await resp.json();
  } catch (e) {
    setStatus(`No answer from the server (${e.message})`, true);
    setState("error");
    return;
  }
  if (!resp.ok) {
    $("result").hidden = true;
    setStatus(`${rec.error || resp.statusText} (HTTP ${resp.status})`, true); // the server's error names the file
    setState("error");
    return;
  }
  const img = await loadImage(file);
  $("result").hidden = false;
  $("result").dataset.faces = String(rec.faces.length);
  draw(rec, img);
  fill(rec);
  const ms = Math.round((rec.timings.total || 0) * 1000);
  const n = rec.faces.length;
  setStatus((n ? `${n} face${n > 1 ? "s" : ""}` : "No face detected") + ` · ${ms} ms on the server` +
            (img ? "" : " · this browser cannot display the photo itself"));
  setState("done");
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => send(e.target.files[0]));
  // a photo dropped anywhere on the page is sent, never opened by the browser instead
  window.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  window.addEventListener("dragleave", (e) => { if (e.target === drop || !e.relatedTarget) drop.classList.remove("over"); });
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  showModel();
  setState("ready");
}

document.addEventListener("DOMContentLoaded", init);
