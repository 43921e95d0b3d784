// The case page: NiiVue shows the source with the chosen map as an overlay in three linked
// planes and a 3D render, in radiological convention (patient's right on the screen's left,
// as ITK-SNAP shows it), with the orientation letters on every plane.
"use strict";
(function () {
  const R = window.XAIMED_REPORT;
  const el = R.el;
  const fmt = R.fmt;
  const byId = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const caseId = params.get("case") || "";
  const viewer = { nv: null, record: null, map: null, mapVolume: null, location: null };
  window.XAIMED_VIEWER = viewer; // read by the browser tests

  function fail(text) {
    byId("viewer-note").textContent = text;
    document.body.dataset.ready = "error";
  }

  if (!/^[A-Za-z0-9._-]+$/.test(caseId)) {
    fail("No case given: open a case from the index page.");
    return;
  }

  async function buffer(file) {
    return R.base64ToBuffer(await R.load(file, file));
  }

  function mapRange(info) {
    // A channel's part of a map: the scale shared by all parts of that map, so that their
    // brightness compares across channels.
    if (viewer.map && viewer.map.scale) return viewer.map.scale;
    return Math.max(Math.abs(info.min), Math.abs(info.max)) || 1;
  }

  function applyDisplay() {
    const img = viewer.mapVolume;
    if (!img) return;
    const info = viewer.map.volume;
    // NiiVue computes a volume's display range the first time it draws it: draw once, so that
    // the range set here is not replaced by that first guess.
    if (img.global_min === undefined) viewer.nv.updateGLVolume();
    const top = mapRange(info);
    const threshold = Number(byId("threshold").value);
    // Signed maps: warm colours for positive values and cool ones for negative values, the
    // same threshold and range on both sides of 0 (a diverging map centred at 0). Colours run
    // from 0 to the largest magnitude; below the threshold the map is transparent. The colour
    // maps go first: assigning one makes NiiVue recompute the display range.
    if (img.colormap !== (info.signed ? "warm" : "inferno")) {
      img.colormap = info.signed ? "warm" : "inferno";
      img.colormapNegative = info.signed ? "winter" : "";
      img.colormapType = 1; // COLORMAP_TYPE.ZERO_TO_MAX_TRANSPARENT_BELOW_MIN
    }
    img.cal_min = threshold * top;
    img.cal_max = top;
    img.opacity = Number(byId("opacity").value);
    byId("threshold-out").textContent = fmt(threshold, 2) + " x " + fmt(top, 3);
    byId("opacity-out").textContent = fmt(img.opacity, 2);
    byId("colormap-note").textContent = info.signed
      ? "signed map: warm > 0, cool < 0, centred at 0"
      : "non-negative map";
    viewer.nv.updateGLVolume();
  }

  // A map of the record by its key; a channel's part shows as its map with the part's volume.
  function findMap(key) {
    for (const m of viewer.record.maps) {
      if (m.key === key) return m;
      const part = (m.channels || []).find((c) => c.key === key);
      if (part) return Object.assign({}, m, { key: part.key, volume: part.volume, scale: part.scale, part: part.name });
    }
    return viewer.record.maps[0];
  }

  async function showMap(key) {
    const map = findMap(key);
    viewer.map = map;
    byId("method").value = map.key;
    history.replaceState(null, "", "?case=" + encodeURIComponent(caseId) + "&method=" + encodeURIComponent(map.key));
    details(map);
    const nv = viewer.nv;
    if (viewer.mapVolume) {
      nv.removeVolume(viewer.mapVolume);
      viewer.mapVolume = null;
    }
    if (!map.volume) {
      byId("viewer-note").textContent = map.status === "ok" ? "This map has no NIfTI file (outputs.nifti: false)." : "This method " + map.status + " on this case.";
      nv.drawScene();
      document.body.dataset.map = map.key;
      document.body.dataset.ready = "1";
      return;
    }
    const img = await niivue.NVImage.new(await buffer(map.volume.file), map.key + ".nii.gz", "gray");
    viewer.mapVolume = img;
    nv.addVolume(img);
    applyDisplay();
    if (!viewer.located) {
      // Open on the strongest voxel of the first map shown, so the planes cross the finding.
      viewer.located = true;
      goTo(map.volume.peak_mm);
    }
    byId("viewer-note").textContent = notes(map);
    document.body.dataset.map = map.key;
    document.body.dataset.ready = "1";
  }

  function notes(map) {
    const out = [];
    const stride = map.volume.stride;
    if (stride > 1) out.push("Shown subsampled: every " + stride + "th voxel along each axis (report.max_size); the full map is " + map.volume.shape.join(" x ") + " voxels.");
    if (!viewer.record.source) out.push("The source image could not be read; the map is shown alone (see the index's warnings).");
    return out.join(" ");
  }

  function table(rows) {
    return el("table", { class: "small" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, v)))));
  }

  function details(map) {
    const p = map.prediction || {};
    const probs = p.probabilities || [];
    const classes = (map.provenance.model || {}).classes || [];
    byId("prediction").replaceChildren(el("h2", {}, "Prediction and target"), table([
      ["predicted class", map.predicted_class || "n/a"],
      ["target explained", map.target || "n/a"],
      ["probability (target)", fmt(map.probability)],
      ["label", viewer.record.label || "n/a"],
      ...probs.map((v, i) => ["p(" + (classes[i] !== undefined ? classes[i] : i) + ")", fmt(v)]),
    ]));
    const problems = [];
    if (map.status !== "ok") problems.push(el("p", { class: "status-failed" }, map.status + ": " + (map.error_type ? map.error_type + ": " : "") + (map.error || "")));
    if (map.warning) problems.push(el("p", { class: "warn" }, "warning: " + map.warning));
    for (const w of map.provenance.warnings || []) problems.push(el("p", { class: "warn" }, "warning: " + (typeof w === "string" ? w : JSON.stringify(w))));
    byId("map-problems").replaceChildren(...problems);
    byId("channels").replaceChildren(...channelParts(map));
    const metrics = Object.entries(map.metrics);
    byId("metrics").replaceChildren(...(metrics.length
      ? [el("h2", {}, "Metrics"), table(metrics.map(([k, v]) => [k, fmt(v)]))]
      : [el("h2", {}, "Metrics"), el("p", { class: "note" }, "Not evaluated (run `xaimed evaluate`).")]));
    byId("curves").replaceChildren(...curves(map.curves));
    byId("provenance").replaceChildren(el("details", {}, el("summary", {}, "Provenance (sidecar)"),
      el("pre", { class: "mono" }, JSON.stringify(map.provenance, null, 1))));
  }

  function channelParts(map) {
    const parts = map.channels || [];
    if (!parts.length) return [];
    const link = (c) => el("a", {
      href: "?case=" + encodeURIComponent(caseId) + "&method=" + encodeURIComponent(c.key),
      onclick: (event) => { event.preventDefault(); showMap(c.key); },
      "aria-current": c.name === map.part ? "true" : null,
    }, c.name);
    const head = el("tr", {}, ["channel", "share", "file"].map((h) => el("th", {}, h)));
    const rows = parts.map((c) => el("tr", {},
      el("td", {}, link(c)), el("td", { class: "mono" }, fmt(c.share)), el("td", { class: "mono" }, c.file)));
    return [el("h2", {}, "Channels"),
      el("p", { class: "note" }, "Each channel's raw part of the map (before post-processing; the parts add up to the raw map), shown on one colour scale."),
      el("table", { class: "small" }, el("thead", {}, head), el("tbody", {}, rows))];
  }

  function curves(all) {
    const kinds = Object.keys(all);
    if (!kinds.length) return [];
    // A small SVG plot: score against the fraction of voxels removed (deletion) or restored
    // (insertion).
    const W = 320, H = 180, P = 32;
    let lo = Infinity, hi = -Infinity;
    for (const k of kinds) for (const y of all[k].y) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
    if (!(hi > lo)) { hi = lo + 1; }
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "curves");
    const colours = { deletion: "#c0392b", insertion: "#2471a3" };
    const add = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.appendChild(n);
    };
    add("rect", { x: P, y: 8, width: W - P - 8, height: H - P - 8, fill: "none", stroke: "#888" });
    kinds.forEach((k, j) => {
      const c = all[k];
      const pts = c.x.map((x, i) => `${P + x * (W - P - 8)},${8 + (1 - (c.y[i] - lo) / (hi - lo)) * (H - P - 8)}`).join(" ");
      add("polyline", { points: pts, fill: "none", stroke: colours[k] || "#333", "stroke-width": 2 });
      add("text", { x: W - 90, y: 22 + 14 * j, fill: colours[k] || "#333", "font-size": 11 }, k);
    });
    add("text", { x: P, y: H - 8, "font-size": 10 }, "0");
    add("text", { x: W - 30, y: H - 8, "font-size": 10 }, "1");
    add("text", { x: W / 2 - 40, y: H - 8, "font-size": 10 }, "fraction perturbed");
    add("text", { x: 2, y: 16, "font-size": 10 }, fmt(hi, 3));
    add("text", { x: 2, y: H - P, "font-size": 10 }, fmt(lo, 3));
    return [el("h2", {}, "Deletion and insertion curves"), svg];
  }

  function fileVoxel(volume, info) {
    // NiiVue indexes voxels of its RAS-resliced copy; name the voxel as the NIfTI file does
    // (the index ITK-SNAP and nibabel use): its centre in world mm, through the inverse affine,
    // times the subsampling stride.
    const loc = viewer.location;
    const vox = volume.mm2vox(Array.from(loc.mm).slice(0, 3));
    const centre = volume.vox2mm(Array.from(vox), volume.matRAS);
    const m = info.world_to_voxel;
    return [0, 1, 2].map((r) => info.stride * Math.round(m[r][0] * centre[0] + m[r][1] * centre[1] + m[r][2] * centre[2] + m[r][3]));
  }

  function onLocation(data) {
    viewer.location = data;
    const values = data.values || [];
    const image = viewer.record.source ? values[0] : null;
    const map = viewer.mapVolume ? values[values.length - 1] : null;
    const mm = Array.from(data.mm).slice(0, 3).map((v) => v.toFixed(1)).join(", ");
    const voxel = map ? fileVoxel(viewer.mapVolume, viewer.map.volume) : null;
    const line = byId("location");
    line.textContent = "world " + mm + " mm (RAS)" + (voxel ? " | voxel " + voxel.join(", ") : "") +
      (image ? " | image " + fmt(image.value) : "") + (map ? " | map " + fmt(map.value) : "");
    line.dataset.mapValue = map ? String(map.value) : "";
    line.dataset.voxel = voxel ? voxel.join(",") : "";
  }

  function goTo(mm) {
    const nv = viewer.nv;
    nv.scene.crosshairPos = nv.mm2frac(mm);
    nv.createOnLocationChange();
    nv.drawScene();
  }

  async function main() {
    const record = await R.load("data/cases/" + caseId + "/case.js", "case").catch(() => null);
    if (!record) {
      fail("No data for case " + caseId + " in this report; open a case from the index page.");
      return;
    }
    viewer.record = record;
    document.title = "xaimed: " + record.id;
    byId("title").textContent = record.id;
    byId("case-state").textContent = record.state + (record.label ? " | label " + record.label : "");
    const select = byId("method");
    for (const m of record.maps) {
      select.appendChild(el("option", { value: m.key }, m.key + (m.status === "ok" ? "" : " (" + m.status + ")")));
      for (const c of m.channels || []) select.appendChild(el("option", { value: c.key }, m.key + " · " + c.name + " part"));
    }
    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1],
      // As ITK-SNAP shows these files: axial and coronal planes with the patient's right on
      // the screen's left, the sagittal plane with the nose to the left; a letter on each side.
      isRadiologicalConvention: true,
      sagittalNoseLeft: true,
      isOrientationTextVisible: true,
      showAllOrientationMarkers: true,
      multiplanarLayout: niivue.MULTIPLANAR_TYPE.GRID,
      show3Dcrosshair: true,
      crosshairWidth: 1,
      crosshairColor: [1, 0, 0, 0.45],
      multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
      dragAndDropEnabled: false,
      isColorbar: true,
      loadingText: "",
      logLevel: "error",
    });
    viewer.nv = nv;
    await nv.attachToCanvas(byId("gl"));
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.onLocationChange = onLocation;
    if (record.source) {
      const source = await niivue.NVImage.new(await buffer(record.source.file), "source.nii.gz", "gray");
      source.colorbarVisible = false;
      nv.addVolume(source);
    }
    for (const id of ["threshold", "opacity"]) byId(id).addEventListener("input", applyDisplay);
    select.addEventListener("change", () => showMap(select.value));
    await showMap(params.get("method") || "");
  }

  main().catch((err) => fail("The viewer could not start: " + err.message));
})();
