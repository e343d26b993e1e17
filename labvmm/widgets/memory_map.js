// The host frame pool as a grid on a <canvas> (labvmm.widgets.memory_map.MemoryMap).
//
// Python sends the ownership table as bytes (owner id + 1 per frame, 0 = free), bit masks of
// shared and dirty frames, and a legend; this draws the frames of the view
// [view_first, view_first + view_count) through a colour table. The grid's layout follows
// memory_map.grid_layout (Python) exactly: a power-of-two number of columns near the square
// root of the frames shown, whole-pixel cells from 1 to MAX_CELL pixels. Shared and dirty
// frames are hatched and outlined when cells are big enough, and get a 5 x 5 pixel marker
// on top when they are not, so they show at any zoom. VM names are an HTML layer over the
// canvas (the canvas itself holds only frame colours).

const TARGET_WIDTH = 512, MAX_CELL = 64;
const MARK_BELOW = 8, MARKER = 5;  // cells smaller than 8 px get a 5 x 5 px marker: hatching would not show
const PINNED_NOTE = "pinned: click the grid again to follow the mouse";

function hexToRgba(hex) {
  const v = parseInt(hex.slice(1), 16);
  // ImageData's Uint32 view is little-endian RGBA: alpha in the top byte.
  return (0xff << 24 | (v & 0xff) << 16 | (v >> 8 & 0xff) << 8 | v >> 16) >>> 0;
}

function bytesOf(view) {
  // Buffers arrive as DataViews at any offset; typed arrays of 2 or 4 bytes need alignment.
  if (!view) return new Uint8Array(0);
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

export function gridLayout(count) {
  const columns = 2 ** Math.max(0, Math.ceil(Math.log2(Math.sqrt(count))));
  const rows = Math.ceil(count / columns);
  const cell = Math.max(1, Math.min(MAX_CELL, Math.floor(TARGET_WIDTH / columns)));
  return { columns, rows, cell };
}

function hex(n) { return "0x" + n.toString(16); }

function render({ model, el }) {
  const make = (tag, props = {}) => Object.assign(document.createElement(tag), props);
  const root = make("div", { className: "labvmm-memory-map" });
  const title = make("div", { className: "labvmm-mm-title" });
  const bar = make("div", { className: "labvmm-mm-bar" });
  const choose = make("select", { title: "zoom to the whole pool or to one VM's frames" });
  const zoomOut = make("button", { textContent: "−", title: "zoom out: four times the frames" });
  const zoomIn = make("button", { textContent: "+", title: "zoom in: a quarter of the frames, around the middle" });
  const range = make("input", {
    placeholder: "range, e.g. 4096-8191",
    title: "show a range of host frames, or of host-physical addresses (hex); Enter applies",
  });
  const viewLine = make("span", { className: "labvmm-mm-view" });
  bar.append("zoom: ", choose, zoomOut, zoomIn, range, viewLine);
  const stage = make("div", { className: "labvmm-mm-stage" });
  const canvas = make("canvas", { className: "labvmm-mm-canvas" });
  const labels = make("div", { className: "labvmm-mm-labels" });
  const info = make("pre", { className: "labvmm-mm-info" });
  stage.append(canvas, labels, info);
  const legend = make("div", { className: "labvmm-mm-legend" });
  const hover = make("div", { className: "labvmm-mm-hover" });
  root.append(title, bar, stage, legend, hover);
  el.appendChild(root);
  const ctx = canvas.getContext("2d");

  let drawScheduled = false, pinned = false, lastSent = -1, sendTimer = null;
  let cursor = null;  // where the tooltip goes: {x, y} in stage pixels

  function view() {
    const total = model.get("frame_count");
    let count = model.get("view_count") || total;
    count = Math.max(1, Math.min(count, total));
    const first = Math.max(0, Math.min(model.get("view_first"), total - count));
    return { first, count, total };
  }

  function setView(first, count) {
    const total = model.get("frame_count");
    count = Math.max(1, Math.min(Math.round(count), total));
    first = Math.max(0, Math.min(Math.round(first), total - count));
    model.set("view_first", first);
    model.set("view_count", count === total ? 0 : count);
    model.save_changes();
  }

  function codesOf() {
    const bpf = model.get("bytes_per_frame");
    const raw = bytesOf(model.get("owners")).buffer;
    return bpf === 1 ? new Uint8Array(raw) : bpf === 2 ? new Uint16Array(raw) : new Uint32Array(raw);
  }

  function draw() {
    drawScheduled = false;
    const { first, count } = view();
    const { columns, rows, cell } = gridLayout(count);
    const codes = codesOf();
    const dirty = bytesOf(model.get("dirty"));
    const shared = bytesOf(model.get("shared"));
    const entries = model.get("legend");
    const lut = new Map(entries.map((e) => [e.code, hexToRgba(e.color)]));
    const unknown = hexToRgba("#000000"), outline = hexToRgba("#111111");
    const hatch = hexToRgba("#ffffff"), black = hexToRgba("#000000");
    if (canvas.width !== columns * cell || canvas.height !== rows * cell) {
      canvas.width = columns * cell;
      canvas.height = rows * cell;
    }
    const image = ctx.createImageData(canvas.width, canvas.height);
    const px = new Uint32Array(image.data.buffer);
    const width = canvas.width;
    const n = Math.min(count, Math.max(codes.length - first, 0));
    const bit = (mask, f) => mask.length && (mask[f >> 3] >> (f & 7)) & 1;
    const marks = [];
    for (let i = 0; i < n; i++) {
      const f = first + i;
      const colour = lut.get(codes[f]) ?? unknown;
      const x0 = (i % columns) * cell, y0 = Math.floor(i / columns) * cell;
      const isDirty = bit(dirty, f), isShared = bit(shared, f);
      const small = cell < MARK_BELOW;
      if ((isDirty || isShared) && small) marks.push([x0, y0, isShared]);
      for (let dy = 0; dy < cell; dy++) {
        let p = (y0 + dy) * width + x0;
        for (let dx = 0; dx < cell; dx++, p++) {
          let c = colour;
          if (!small && (isShared || isDirty)) {
            const edge = dx === 0 || dy === 0 || dx === cell - 1 || dy === cell - 1;
            if (isShared && (dx + dy) % 4 < 2) c = hatch;  // hatched: one frame in two VMs
            if (edge) c = isShared ? black : outline;
          }
          px[p] = c;
        }
      }
    }
    // Frames too small to hatch: a marker centred on the cell, drawn over its neighbours:
    // white with a black ring for a shared frame, dark for a dirty one.
    for (const [x0, y0, isShared] of marks) {
      const cx = x0 + (cell >> 1) - (MARKER >> 1), cy = y0 + (cell >> 1) - (MARKER >> 1);
      for (let dy = 0; dy < MARKER; dy++) {
        for (let dx = 0; dx < MARKER; dx++) {
          const x = cx + dx, y = cy + dy;
          if (x < 0 || y < 0 || x >= width || y >= canvas.height) continue;
          const edge = dx === 0 || dy === 0 || dx === MARKER - 1 || dy === MARKER - 1;
          px[y * width + x] = isShared ? (edge ? black : hatch) : outline;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    drawLabels(first, n, columns, cell, codes, entries);
    title.textContent = model.get("title");
    const last = first + count - 1;
    viewLine.textContent = ` frames ${first}-${last} (host ${hex(first * 4096)}-${hex(last * 4096 + 4095)}), ` +
      `${columns} a row, ${cell} px a frame`;
    fillChoices(entries, first, count);
    legend.replaceChildren(...entries.map((e) => {
      const item = make("span", { className: "labvmm-mm-key" });
      item.dataset.code = String(e.code);
      const swatch = make("span", { className: "labvmm-mm-swatch" });
      swatch.style.background = e.swatch || e.color;
      item.append(swatch, document.createTextNode(` ${e.name} (${e.frames} frames)`));
      return item;
    }));
  }

  function drawLabels(first, n, columns, cell, codes, entries) {
    // The longest run of each owner in view gets its name, if two rows of cells are 14 px or more.
    const names = new Map(entries.filter((e) => e.code > 0).map((e) => [e.code, e.name]));
    const longest = new Map();
    let start = 0;
    for (let i = 1; i <= n; i++) {
      if (i === n || codes[first + i] !== codes[first + start]) {
        const code = codes[first + start];
        if (names.has(code) && (!longest.has(code) || i - start > longest.get(code)[1])) longest.set(code, [start, i - start]);
        start = i;
      }
    }
    const scale = canvas.clientWidth ? canvas.clientWidth / canvas.width : 1;
    labels.replaceChildren();
    for (const [code, [runStart, length]] of longest) {
      const row = Math.ceil(runStart / columns);  // the first whole row of the run
      const wholeRows = Math.floor((runStart + length) / columns) - row;
      if (wholeRows * cell * scale < 14) continue;  // no room for a line of text
      const label = make("span", { className: "labvmm-mm-label" });
      label.textContent = names.get(code);
      label.style.left = "2px";
      label.style.top = `${row * cell * scale + 1}px`;
      labels.append(label);
    }
  }

  function fillChoices(entries, first, count) {
    const owners = entries.filter((e) => e.code > 0 && e.frames > 0);
    const key = owners.map((e) => `${e.code}:${e.first}:${e.last}`).join(",");
    if (choose.dataset.key !== key) {
      choose.dataset.key = key;
      choose.replaceChildren(new Option("the whole pool", "all"),
        ...owners.map((e) => new Option(`${e.name} (frames ${e.first}-${e.last})`, `${e.first}-${e.last}`)));
    }
    const total = model.get("frame_count");
    const match = owners.find((e) => e.first === first && e.last - e.first + 1 === count);
    choose.value = count === total ? "all" : match ? `${match.first}-${match.last}` : "";
  }

  function scheduleDraw() {
    if (!drawScheduled) {
      drawScheduled = true;
      requestAnimationFrame(draw);  // many changes between two frames: one draw, of the latest
    }
  }

  function frameAt(event) {
    const box = canvas.getBoundingClientRect();
    const { first, count } = view();
    const { columns, cell } = gridLayout(count);
    const x = Math.floor((event.clientX - box.left) * canvas.width / box.width / cell);
    const y = Math.floor((event.clientY - box.top) * canvas.height / box.height / cell);
    const i = y * columns + x;
    return x >= 0 && x < columns && y >= 0 && i < count ? first + i : -1;
  }

  function select(frame) {
    // At most 10 selections a second reach Python; the last one always does.
    if (frame === lastSent) return;
    clearTimeout(sendTimer);
    sendTimer = setTimeout(() => {
      lastSent = frame;
      model.set("selected_frame", frame);
      model.save_changes();
    }, 100);
  }

  function placeInfo() {
    // Beside the cursor: right of it if there is room, else left; below it in the upper half, else above.
    if (!cursor || info.hidden) return;
    const room = stage.clientWidth, high = stage.clientHeight;
    const w = info.offsetWidth, h = info.offsetHeight;
    const left = cursor.x + 14 + w <= room ? cursor.x + 14 : Math.max(cursor.x - 14 - w, 0);
    const top = cursor.y < high / 2 ? cursor.y + 14 : Math.max(cursor.y - 14 - h, 0);
    info.style.left = `${left}px`;
    info.style.top = `${top}px`;
  }

  function onMove(event) {
    const f = frameAt(event);
    if (f < 0) { hover.textContent = ""; return; }
    const box = stage.getBoundingClientRect();
    if (!pinned) cursor = { x: event.clientX - box.left, y: event.clientY - box.top };
    const codes = codesOf();
    const entry = model.get("legend").find((e) => e.code === codes[f]);
    const isShared = (() => { const s = bytesOf(model.get("shared")); return s.length && (s[f >> 3] >> (f & 7)) & 1; })();
    hover.textContent = `frame ${f} (host offset ${hex(f * 4096)}): ${entry ? entry.name : "?"}` +
      (isShared ? " (shared with another VM)" : "") + (pinned ? ` - ${PINNED_NOTE}` : "");
    if (!pinned) { select(f); info.hidden = false; placeInfo(); }
  }

  function onLeave() { if (!pinned) info.hidden = true; }

  function onClick(event) {
    const f = frameAt(event);
    pinned = !pinned && f >= 0;
    if (f >= 0) { select(f); info.hidden = false; }
  }

  function onWheel(event) {
    event.preventDefault();
    const { first, count, total } = view();
    if (event.shiftKey || Math.abs(event.deltaX) > Math.abs(event.deltaY)) {  // pan by a quarter of the view
      const by = Math.sign(event.shiftKey ? event.deltaY : event.deltaX) * Math.max(1, Math.floor(count / 4));
      setView(first + by, count);
      return;
    }
    const f = frameAt(event);
    const anchor = f >= 0 ? f : first + count / 2;
    const factor = event.deltaY > 0 ? 2 : 0.5;
    const fresh = Math.max(1, Math.min(total, Math.round(count * factor)));
    setView(anchor - (anchor - first) * fresh / count, fresh);
  }

  function applyRange() {
    const text = range.value.trim().toLowerCase().replace(/^frames?\s*/, "");
    const found = text.match(/^(0x[0-9a-f]+|\d+)\s*(?:-|\.\.)\s*(0x[0-9a-f]+|\d+)$/);
    if (!found) { range.setCustomValidity("e.g. 4096-8191 (frames) or 0x1000000-0x1ffffff (host addresses)"); range.reportValidity(); return; }
    range.setCustomValidity("");
    const addresses = found[1].startsWith("0x");
    let lo = Number(found[1]), hi = Number(found[2]);
    if (addresses) { lo = Math.floor(lo / 4096); hi = Math.floor(hi / 4096); }
    if (hi < lo) [lo, hi] = [hi, lo];
    setView(lo, hi - lo + 1);
  }

  function showInfo() {
    const i = model.get("selected_info");
    if (!i || i.frame === undefined) {
      info.textContent = "Hover over a cell to see its page; click to keep it.";
    } else if (i.pending) {
      info.textContent = `frame ${i.frame}: reading the page between two chunks of guest time...`;
    } else {
      const head = (i.owner === null
        ? `frame ${i.frame}: free`
        : `frame ${i.frame}: ${i.owner} (VM ${i.owner_id}), guest address ${i.guest_address_hex}`) +
        (i.shared_with && i.shared_with.length ? `, also mapped by ${i.shared_with.join(", ")}` : "");
      info.textContent = head + (i.hexdump ? "\n" + i.hexdump : "");
    }
    placeInfo();
  }

  choose.addEventListener("change", () => {
    if (choose.value === "all") { setView(0, model.get("frame_count")); return; }
    const [lo, hi] = choose.value.split("-").map(Number);
    setView(lo, hi - lo + 1);
  });
  zoomOut.addEventListener("click", () => { const { first, count } = view(); setView(first - 1.5 * count, 4 * count); });
  zoomIn.addEventListener("click", () => { const { first, count } = view(); setView(first + 3 * count / 8, count / 4); });
  range.addEventListener("keydown", (event) => { if (event.key === "Enter") applyRange(); });
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  const keys = ["owners", "dirty", "shared", "legend", "frame_count", "title", "view_first", "view_count"];
  for (const k of keys) model.on(`change:${k}`, scheduleDraw);
  model.on("change:selected_info", showInfo);
  info.hidden = true;
  draw();
  showInfo();
  return () => {
    clearTimeout(sendTimer);
    for (const k of keys) model.off(`change:${k}`, scheduleDraw);
    model.off("change:selected_info", showInfo);
  };
}

export default { render };
