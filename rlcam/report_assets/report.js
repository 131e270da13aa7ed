// rlcam report: draws a recorded run from its raw data (written by rlcam/report.py).
// Everything the page shows is computed here from the trace's raw maps: normalisation, colour,
// blending. The blend repeats the video's (Pillow's masked paste: DIV255(dst*(255-m) + src*m) with
// m = round(alpha * heat index)), so a step looks the same on the page as in the MP4.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("rlcam-data").textContent);
  const T = D.steps;
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- binary arrays (little-endian, base64) ---------------------------------------------------

  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function arr(spec) {
    if (!spec) return null;
    const b = bytesOf(spec.b64);
    const Type = { f4: Float32Array, i4: Int32Array, u1: Uint8Array }[spec.dtype];
    const a = new Type(b.buffer);
    a.shape = spec.shape;
    return a;
  }

  // Rows of a dense (R, C) placement matrix as its non-zero entries: bilinear and receptive-field
  // placements have at most four per row, so placing a map costs O(pixels), whatever its size.
  // A matrix sent as such (``start``, ``idx``, ``w``: report.py's sparse_rows) is taken as it is.
  function sparseRows(spec) {
    if (spec.start) {
      const [R, C] = spec.shape;
      return { R, C, start: arr(spec.start), idx: arr(spec.idx), w: Float64Array.from(arr(spec.w)) };
    }
    const m = arr(spec);
    const [R, C] = spec.shape;
    const start = new Int32Array(R + 1);
    const idx = [];
    const w = [];
    for (let r = 0; r < R; r++) {
      start[r] = idx.length;
      for (let c = 0; c < C; c++) {
        const v = m[r * C + c];
        if (v !== 0) {
          idx.push(c);
          w.push(v);
        }
      }
    }
    start[R] = idx.length;
    return { R, C, start, idx: Int32Array.from(idx), w: Float64Array.from(w) };
  }

  function lut32(spec) {
    const lut = arr(spec); // (256, 3)
    const out = new Uint32Array(256);
    for (let i = 0; i < 256; i++) out[i] = 0xff000000 | (lut[3 * i + 2] << 16) | (lut[3 * i + 1] << 8) | lut[3 * i];
    return out;
  }
  const LUT32 = lut32(D.lut);
  // Signed targets: what pushes the score down, in the cool ramp, on the same scale as the map.
  const LUT_DOWN32 = D.lut_down ? lut32(D.lut_down) : LUT32;

  // The "pushes it down" colour of signed bars: the cool ramp's, as the video's panel (LUT_DOWN[200]).
  document.documentElement.style.setProperty("--down", `rgb(${LUT_DOWN32[200] & 255}, ${(LUT_DOWN32[200] >> 8) & 255}, ${(LUT_DOWN32[200] >> 16) & 255})`);

  const RUN_COLOURS = ["rgb(255, 166, 82)", "rgb(110, 190, 255)"]; // first and second run, everywhere

  // -- frames: chunks of XOR-delta coded palette (or RGB) planes, deflated -----------------------

  async function inflate(u8) {
    const stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  class FrameStore {
    constructor(spec) {
      this.H = spec.height;
      this.W = spec.width;
      this.C = spec.channels;
      this.chunk = spec.chunk;
      this.chunks = spec.chunks;
      this.size = this.H * this.W * this.C;
      this.palette = null;
      if (spec.palette) {
        const p = arr(spec.palette);
        this.palette = new Uint32Array(p.length / 3);
        for (let i = 0; i < this.palette.length; i++) {
          this.palette[i] = 0xff000000 | (p[3 * i + 2] << 16) | (p[3 * i + 1] << 8) | p[3 * i];
        }
      }
      this.cache = new Map();
      this.loading = new Map();
      this.maxChunks = Math.max(6, Math.floor(256e6 / (this.size * this.chunk)));
      this.listeners = [];
      this.focus = 0;
    }
    frame(t) {
      const c = Math.floor(t / this.chunk);
      const buf = this.cache.get(c);
      if (!buf) {
        this.load(c);
        return null;
      }
      const at = (t - c * this.chunk) * this.size;
      return buf.subarray(at, at + this.size);
    }
    load(c) {
      if (c < 0 || c >= this.chunks.length || this.cache.has(c) || this.loading.has(c)) return;
      const job = inflate(bytesOf(this.chunks[c])).then((buf) => {
        const n = buf.length / this.size;
        const aligned = this.size % 4 === 0;
        const v = aligned ? new Uint32Array(buf.buffer) : buf;
        const s = aligned ? this.size / 4 : this.size;
        for (let i = 1; i < n; i++) {
          const a = i * s;
          const b = a - s;
          for (let j = 0; j < s; j++) v[a + j] ^= v[b + j];
        }
        this.cache.set(c, buf);
        this.loading.delete(c);
        this.evict();
        for (const f of this.listeners) f(c);
      });
      this.loading.set(c, job);
    }
    // The source column of each display column, upscaled ``scale`` times (nearest).
    columns(scale) {
      if (!this.cols || this.cols.scale !== scale) {
        this.cols = Int32Array.from({ length: this.W * scale }, (_, X) => Math.floor(X / scale));
        this.cols.scale = scale;
      }
      return this.cols;
    }
    prefetch(t) {
      const c = Math.floor(t / this.chunk);
      this.focus = c;
      for (const d of [0, 1, -1, 2, 3, -2]) this.load(c + d);
    }
    evict() {
      while (this.cache.size > this.maxChunks) {
        let far = -1;
        let farDist = -1;
        for (const k of this.cache.keys()) {
          const d = Math.abs(k - this.focus);
          if (d > farDist) {
            far = k;
            farDist = d;
          }
        }
        this.cache.delete(far);
      }
    }
    loadAll() {
      // In the background, nearest chunks first, as far as the cache holds them.
      const order = [...this.chunks.keys()].sort((a, b) => Math.abs(a - this.focus) - Math.abs(b - this.focus));
      let i = 0;
      const next = () => {
        while (i < order.length && i < this.maxChunks && (this.cache.has(order[i]) || this.loading.has(order[i]))) i++;
        if (i >= order.length || i >= this.maxChunks) return;
        this.load(order[i]);
        this.loading.get(order[i]).then(() => setTimeout(next, 0));
      };
      next();
    }
  }

  const stores = D.frames.map((s) => new FrameStore(s));

  // -- display state --------------------------------------------------------------------------------

  const NORMS = ["frame", "episode", "running"];
  const state = {
    step: 0,
    norm: NORMS.includes(D.norm) ? D.norm : "running",
    overlay: true,
    signed: true,
    alpha: 0.6,
    objects: false,
    playing: false,
    speed: 1,
  };

  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }
  let maskTable = new Uint8Array(256);
  function setAlpha(a) {
    state.alpha = a;
    maskTable = new Uint8Array(256);
    for (let i = 0; i < 256; i++) maskTable[i] = roundHalfEven(a * i); // Python's round(), as the video
  }
  setAlpha(state.alpha);

  // Per-step normalisers of the video (rlcam/norm.py), from each step's map peak:
  // frame = the peak; episode = the max so far in the game; running = max(previous * decay, peak).
  function scales(peak, gameOver) {
    const out = { frame: new Float64Array(T), episode: new Float64Array(T), running: new Float64Array(T) };
    let ep = 0;
    let run = 0;
    for (let t = 0; t < T; t++) {
      const p = peak[t];
      ep = Math.max(ep, p);
      run = Math.max(run * D.running_decay, p);
      out.frame[t] = p;
      out.episode[t] = ep;
      out.running[t] = run;
      if (gameOver[t]) ep = 0;
    }
    return out;
  }

  // Each step's map peak; with a second map (a signed target's "pushes it down"), the peak of both,
  // since the recorder puts the two sides on one scale.
  function mapPeaks(cams, per, other) {
    const n = cams.length / per;
    const out = new Float64Array(n);
    for (let t = 0; t < n; t++) {
      let m = 0;
      for (let j = t * per, e = j + per; j < e; j++) {
        if (cams[j] > m) m = cams[j];
        if (other && other[j] > m) m = other[j];
      }
      out[t] = m;
    }
    return out;
  }

  // -- one run: its data, its view and its panel ------------------------------------------------------

  const DIV255 = (a) => {
    const t = a + 128;
    return ((t >> 8) + t) >> 8;
  };

  class Run {
    constructor(spec, index) {
      this.spec = spec;
      this.index = index;
      this.store = stores[spec.frames];
      this.names = spec.action_names;
      this.cam = arr(spec.cam);
      [, this.h, this.w] = spec.cam.shape;
      this.ys = sparseRows(spec.placement.ys);
      this.xs = sparseRows(spec.placement.xs);
      this.tileYs = sparseRows(spec.placement.tile_ys);
      this.tileXs = sparseRows(spec.placement.tile_xs);
      this.action = arr(spec.action);
      this.kind = spec.bar_kind; // prob, q, component (continuous actions) or parts (structured)
      this.vector = this.kind === "component" || this.kind === "parts";
      this.nD = this.vector ? spec.action.shape[1] : 1; // numbers per action
      this.partNames = spec.component_names || this.names;
      this.space = spec.space || {};
      this.done = arr(spec.done);
      this.gameOver = arr(spec.game_over);
      this.values = arr(spec.action_values);
      this.nA = this.values ? spec.action_values.shape[1] : this.names.length; // bars per step
      this.camDown = arr(spec.cam_down);
      this.actionCams = arr(spec.action_cams);
      this.nT = this.actionCams ? spec.action_cams.shape[1] : 0;
      this.tileLabels = spec.tile_labels || this.names;
      this.inputShares = spec.series ? Object.keys(spec.series).filter((k) => k.startsWith("input_")) : [];
      this.frameShares = arr(spec.frame_shares);
      this.score = arr(spec.score);
      this.series = {};
      for (const k of Object.keys(spec.series)) this.series[k] = arr(spec.series[k]);
      this.objects = {};
      for (const k of Object.keys(spec.objects)) this.objects[k] = arr(spec.objects[k]);
      this.scale = D.scale;
      // Dict observations: every other image key's map (same score, its own input grid) in a pane of its own.
      // Its frames come with it, or (a comparison on one game) are the index of the page's frames both runs show.
      this.keyMaps = (spec.key_maps || []).map((k) => {
        const shared = typeof k.frames === "number";
        const store = shared ? stores[k.frames] : new FrameStore(k.frames);
        if (!shared) stores.push(store); // prefetched, and drawn when its chunks arrive, as the main frames are
        const heat = new Uint8Array(store.H * this.scale * store.W * this.scale);
        return { key: k.key, store, cam: arr(k.cam), per: k.cam.shape[1] * k.cam.shape[2], ys: sparseRows(k.ys), xs: sparseRows(k.xs), heat };
      });
      // One scale over every image key's map, as the recorder normalises them together.
      const peaks = mapPeaks(this.cam, this.h * this.w, this.camDown);
      for (const k of this.keyMaps) {
        const own = mapPeaks(k.cam, k.per);
        for (let t = 0; t < peaks.length; t++) peaks[t] = Math.max(peaks[t], own[t]);
      }
      this.scales = scales(peaks, this.gameOver);
      this.attributions = (spec.attributions || []).map((a) => ({ key: a.key, values: arr(a.values), dim: a.values.shape[1] }));
      if (this.actionCams) this.actionScales = scales(mapPeaks(this.actionCams, this.nT * this.h * this.w), this.gameOver);
      this.Hs = this.store.H * this.scale;
      this.Ws = this.store.W * this.scale;
      this.tmp = new Float64Array(this.h * Math.max(this.Ws, this.store.W));
      this.row = new Float64Array(Math.max(this.Ws, this.store.W));
      this.colS = Int32Array.from({ length: this.Ws }, (_, X) => Math.floor(X / this.scale)); // nearest upscaling
      this.col1 = Int32Array.from({ length: this.store.W }, (_, X) => X);
      this.heat = new Uint8Array(this.Hs * this.Ws);
      this.heatDown = this.camDown ? new Uint8Array(this.Hs * this.Ws) : null;
      this.tileHeat = new Uint8Array(this.store.H * this.store.W);
      this.colour = RUN_COLOURS[index];
      this.build();
    }

    // Colormap indices of map ``cam[off..]`` placed by (ys, xs), scaled so ``full`` is 255:
    // round(ys @ (cam * 255 / full) @ xs^T), clipped to 0..255 (the recorder's _placed_indices).
    place(cams, off, ys, xs, full, out) {
      const h = ys.C; // the map's grid: the layer's, or an image key's input grid
      const w = xs.C;
      const factor = full > 0 ? 255 / full : 0;
      const W = xs.R;
      if (this.tmp.length < h * W) this.tmp = new Float64Array(h * W);
      if (this.row.length < W) this.row = new Float64Array(W);
      const tmp = this.tmp;
      for (let i = 0; i < h; i++) {
        const row = off + i * w;
        for (let X = 0; X < W; X++) {
          let s = 0;
          for (let k = xs.start[X], e = xs.start[X + 1]; k < e; k++) s += cams[row + xs.idx[k]] * xs.w[k];
          tmp[i * W + X] = s * factor;
        }
      }
      const row = this.row;
      for (let Y = 0; Y < ys.R; Y++) {
        row.fill(0, 0, W);
        for (let k = ys.start[Y], e = ys.start[Y + 1]; k < e; k++) {
          const wk = ys.w[k];
          const base = ys.idx[k] * W;
          for (let X = 0; X < W; X++) row[X] += wk * tmp[base + X];
        }
        const o = Y * W;
        for (let X = 0; X < W; X++) {
          const s = Math.abs(row[X]);
          out[o + X] = s >= 255 ? 255 : Math.round(s);
        }
      }
    }

    // The frame (of ``store``) upscaled by ``scale`` (nearest), with the heat blended over it when
    // ``heat`` is given.
    compose(frame, scale, heat, image, heatDown = null, store = this.store) {
      const { H, W, C, palette } = store;
      const out = new Uint32Array(image.data.buffer);
      const Ws = W * scale;
      const mask = maskTable;
      const col = store === this.store ? (scale === 1 ? this.col1 : this.colS) : store.columns(scale);
      for (let Y = 0; Y < H * scale; Y++) {
        const rowStart = ((Y / scale) | 0) * W;
        for (let X = 0; X < Ws; X++) {
          const p = rowStart + col[X];
          let r, g, b;
          if (C === 1) {
            const c = palette[frame[p]];
            r = c & 255;
            g = (c >> 8) & 255;
            b = (c >> 16) & 255;
          } else {
            r = frame[3 * p];
            g = frame[3 * p + 1];
            b = frame[3 * p + 2];
          }
          const o = Y * Ws + X;
          if (heat) {
            const i = heat[o];
            const m = mask[i];
            if (m) {
              const c = LUT32[i];
              const n = 255 - m;
              r = DIV255(r * n + (c & 255) * m);
              g = DIV255(g * n + ((c >> 8) & 255) * m);
              b = DIV255(b * n + ((c >> 16) & 255) * m);
            }
          }
          if (heatDown) {
            // painted over the first, as the recorder does (render.compose's heat_down)
            const i = heatDown[o];
            const m = mask[i];
            if (m) {
              const c = LUT_DOWN32[i];
              const n = 255 - m;
              r = DIV255(r * n + (c & 255) * m);
              g = DIV255(g * n + ((c >> 8) & 255) * m);
              b = DIV255(b * n + ((c >> 16) & 255) * m);
            }
          }
          out[o] = 0xff000000 | (b << 16) | (g << 8) | r;
        }
      }
    }

    build() {
      const root = el("div", this.keyMaps.length ? "run multi" : "run");
      root.dataset.run = this.index;
      const view = el("div", "view");
      const head = el("div", "view-head");
      const who = el("span", "who");
      const sw = el("span", "swatch");
      sw.style.background = this.colour;
      who.append(sw, document.createTextNode(this.spec.label));
      this.headInfo = el("span", "dim");
      head.append(who, this.headInfo);
      this.canvas = el("canvas", "frame");
      this.canvas.width = this.Ws;
      this.canvas.height = this.Hs;
      this.canvas.dataset.step = "-1";
      this.ctx = this.canvas.getContext("2d");
      this.image = this.ctx.createImageData(this.Ws, this.Hs);
      const bar = el("div", "colorbar");
      const ramp = el("canvas");
      ramp.width = 256;
      ramp.height = 1;
      const rctx = ramp.getContext("2d");
      const rimg = rctx.createImageData(256, 1);
      new Uint32Array(rimg.data.buffer).set(LUT32);
      rctx.putImageData(rimg, 0, 0);
      this.fullLabel = el("span", "full");
      bar.append(el("span", "", "0"), ramp, this.fullLabel);
      bar.style.width = this.keyMaps.length ? "100%" : `${this.Ws}px`;
      bar.style.maxWidth = "100%";
      head.style.width = bar.style.width;
      bar.title = "the raw map value that full colour means, under the chosen normalisation";
      view.append(head, this.keyMaps.length ? this.buildPanes() : this.canvas, bar);
      if (this.camDown) {
        const down = el("div", "colorbar down");
        const dramp = el("canvas");
        dramp.width = 256;
        dramp.height = 1;
        const dctx = dramp.getContext("2d");
        const dimg = dctx.createImageData(256, 1);
        new Uint32Array(dimg.data.buffer).set(LUT_DOWN32);
        dctx.putImageData(dimg, 0, 0);
        down.append(el("span", "", "0"), dramp, el("span", "full", "pushes it down (same scale)"));
        down.style.width = bar.style.width;
        down.style.maxWidth = "100%";
        down.title = "what pushes the explained score down (the counterfactual map), on the map's scale";
        const up = el("div", "dim legend", "warm: pushes the score up");
        view.append(up, down);
      }
      if (this.keyMaps.length) {
        view.append(
          el(
            "div",
            "dim legend",
            `every image key as the agent saw it, each with its map of the same score at its own layer, on one colour scale (as the video): the layer is on "${this.space.image_key}"${this.camDown ? `, the only key with a "pushes it down" side (the others' are not computed)` : ""}`,
          ),
        );
      } else if (this.space.image_key) {
        view.append(
          el("div", "dim legend", `frame: the observation's "${this.space.image_key}" key (the map is on it), not the env's render`),
        );
      }

      const panel = el("div", "panel");
      const decision = el("div", "decision");
      this.actLabel = el("span", "act");
      this.actHow = el("span", "how");
      this.agreeLabel = el("span", "agree");
      this.agreeLabel.hidden = true;
      decision.append(this.actLabel, this.actHow, this.agreeLabel);
      panel.append(decision);
      this.barRows = [];
      if (this.kind === "component") this.buildComponents(panel);
      else if (this.kind === "parts" && this.values) this.buildParts(panel);
      else if (this.values) {
        const bars = el("div", "bars");
        for (let a = 0; a < this.nA; a++) {
          const name = el("span", "name", this.names[a]);
          const track = el("div", "track");
          const fill = el("div", "fill");
          track.append(fill);
          const num = el("span", "num");
          bars.append(name, track, num);
          this.barRows.push({ name, fill, num });
        }
        const wrap = el("div");
        wrap.append(el("div", "subhead", this.spec.bar_kind === "prob" ? "action probabilities" : "Q-values"), bars);
        panel.append(wrap);
      }
      this.stats = {};
      const stats = el("div", "stats");
      const labels = [
        ["value", this.spec.value_label || (this.spec.bar_kind === "prob" ? "value V(s)" : "max Q")],
        ["score", `score (${this.spec.meta.target})`],
        ["reward", "reward"],
        ["return", "return"],
        ["episode", "game"],
        ["peak", this.keyMaps.length ? `map peak (${this.space.image_key})` : "map peak"],
      ];
      if (this.series.entropy) labels.push(["entropy", "entropy"]);
      else if (this.series.margin) labels.push(["margin", "Q gap"]);
      if (this.series.memory_effect) labels.push(["memory_effect", "memory effect"], ["pixel_effect", "pixel effect"]);
      for (const k of Object.keys(this.objects)) labels.push([`share_${k}`, `on ${k}`]);
      for (const [k, label] of labels) {
        if (k === "score" ? !this.score : !this.series[k]) continue;
        const s = el("div", "stat");
        const v = el("div", "v");
        s.append(el("div", "k", label), v);
        stats.append(s);
        this.stats[k] = v;
      }
      panel.append(stats);
      if (this.frameShares) {
        const nC = this.frameShares.shape[1];
        const bars = el("div", "bars");
        this.shareRows = [];
        for (let c = 0; c < nC; c++) {
          const name = el("span", "name", c === nC - 1 ? "newest" : `t\u2212${nC - 1 - c}`);
          const track = el("div", "track");
          const fill = el("div", "fill");
          track.append(fill);
          const num = el("span", "num");
          bars.append(name, track, num);
          this.shareRows.push({ fill, num });
        }
        const wrap = el("div");
        wrap.append(el("div", "subhead", "each stacked frame's share of the map (guided)"), bars);
        panel.append(wrap);
      }
      if (this.inputShares.length) {
        const bars = el("div", "bars");
        this.inputRows = [];
        for (const k of this.inputShares) {
          const key = k.slice("input_".length);
          const name = el("span", "name", key === this.space.image_key ? `${key} (mapped)` : key);
          const track = el("div", "track");
          const fill = el("div", "fill");
          track.append(fill);
          const num = el("span", "num");
          bars.append(name, track, num);
          this.inputRows.push({ k, fill, num });
        }
        const wrap = el("div", "input-shares");
        wrap.append(el("div", "subhead", "each input key's share of the score (gradient \u00d7 input)"), bars);
        panel.append(wrap);
      }
      if (this.attributions.length) this.buildAttributions(panel);
      if (this.actionCams) {
        const wrap = el("div");
        this.tileTitle = el("div", "subhead", "every action's map, one scale");
        const tiles = el("div", "tiles");
        this.tiles = [];
        for (let a = 0; a < this.nT; a++) {
          const tile = el("div", "tile");
          const c = el("canvas");
          c.width = this.store.W;
          c.height = this.store.H;
          const cap = el("div");
          tile.append(c, cap);
          tiles.append(tile);
          const ctx = c.getContext("2d");
          this.tiles.push({ tile, ctx, image: ctx.createImageData(c.width, c.height), cap });
        }
        wrap.append(this.tileTitle, tiles);
        panel.append(wrap);
      }
      const facts = el("dl", "facts");
      for (const [k, v] of [
        ["target", this.spec.meta.target],
        ["method", this.spec.meta.method],
        ["layer", this.spec.meta.layer],
        ["placement", this.spec.meta.placement],
      ]) {
        facts.append(el("dt", "", k), el("dd", "", String(v)));
      }
      panel.append(facts);
      root.append(view, panel);
      $("runs").append(root);
    }

    // Dict observations: every image key the page maps, side by side in the space's order (as the
    // video), each captioned with its key and its share of the score.
    buildPanes() {
      const panes = el("div", "panes");
      const mapped = this.space.image_key;
      const names = (this.space.input_names || []).filter((k) => k === mapped || this.keyMaps.some((m) => m.key === k));
      this.paneShares = [];
      for (const key of names) {
        const pane = el("figure", "pane");
        pane.dataset.key = key;
        const cap = el("figcaption");
        cap.append(el("span", "key", key));
        if (key === mapped) cap.append(el("span", "tag", "layer's key"));
        const share = el("span", "share");
        cap.append(share);
        if (this.series[`input_${key}`]) this.paneShares.push({ share, values: this.series[`input_${key}`] });
        const k = this.keyMaps.find((m) => m.key === key);
        let canvas = this.canvas;
        if (k) {
          canvas = el("canvas", "keyframe");
          canvas.width = k.store.W * this.scale;
          canvas.height = k.store.H * this.scale;
          canvas.dataset.step = "-1";
          canvas.dataset.key = key;
          k.canvas = canvas;
          k.ctx = canvas.getContext("2d");
          k.image = k.ctx.createImageData(canvas.width, canvas.height);
        }
        pane.style.flex = `${canvas.width} 1 0`; // panes shrink together, each at most its natural size
        pane.style.maxWidth = `${canvas.width}px`;
        pane.append(cap, canvas);
        panes.append(pane);
      }
      return panes;
    }

    // Dict observations' vector keys: a signed bar per element (gradient x input), from a centre
    // zero line, scaled by the step's largest |element| over every key (as the video's strip).
    buildAttributions(panel) {
      const bars = el("div", "bars elements");
      this.elementRows = [];
      for (const a of this.attributions) {
        for (let i = 0; i < a.dim; i++) {
          const name = el("span", "name", `${a.key}[${i}]`);
          const track = el("div", "track signed");
          const zero = el("div", "zero");
          zero.style.left = "50%";
          const fill = el("div", "fill");
          track.append(zero, fill);
          const num = el("span", "num");
          bars.append(name, track, num);
          this.elementRows.push({ values: a.values, dim: a.dim, i, fill, num });
        }
      }
      const head = el("div", "subhead split");
      this.elementPeak = el("span", "peak");
      head.append(el("span", "", "vector keys \u00b7 gradient \u00d7 input per element"), this.elementPeak);
      const legend = el("div", "dim legend");
      legend.append(el("span", "sign up", "\u25a0"), " pushes the score up  ", el("span", "sign down", "\u25a0"), " pushes it down");
      const wrap = el("div", "input-elements");
      wrap.title = "each element's gradient \u00d7 input: its first-order part of the explained score";
      wrap.append(head, bars, legend);
      panel.append(wrap);
    }

    fmtBar(v) {
      return this.spec.bar_kind === "prob" || this.kind === "parts" ? `${(100 * v).toFixed(1)}%` : fmt(v);
    }

    // A bar per action component, drawn within its bounds from 0 (or the bound nearer 0): the taken
    // action filled, the deterministic one (action_values) a tick, when they differ (sampled actions).
    buildComponents(panel) {
      const bars = el("div", "bars components");
      const low = this.space.low || [];
      const high = this.space.high || [];
      for (let i = 0; i < this.nD; i++) {
        const lo = Number.isFinite(low[i]) ? low[i] : -1;
        const hi = Number.isFinite(high[i]) ? high[i] : 1;
        const name = el("span", "name", this.partNames[i]);
        const track = el("div", "track signed");
        track.title = `bounds ${fmt(lo)} .. ${fmt(hi)}`;
        const zero = el("div", "zero");
        const fill = el("div", "fill on");
        const tick = el("div", "tick");
        const ends = el("div", "ends");
        ends.append(el("span", "", fmt(lo)), el("span", "", fmt(hi)));
        track.append(zero, fill, tick, ends);
        const num = el("span", "num");
        bars.append(name, track, num);
        const origin = Math.min(hi, Math.max(lo, 0));
        const at = (v) => (hi > lo ? (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo) : 0.5);
        zero.style.left = `${100 * at(origin)}%`;
        this.barRows.push({ name, fill, num, tick, at, origin });
      }
      const wrap = el("div");
      wrap.append(el("div", "subhead", "action components, each within its bounds (tick: the deterministic action)"), bars);
      panel.append(wrap);
    }

    // A bar group per part of a structured action: each choice's probability, the taken one marked.
    buildParts(panel) {
      const wrap = el("div", "parts");
      const sizes = this.space.sizes || [];
      let offset = 0;
      this.partOffsets = [];
      for (let p = 0; p < sizes.length; p++) {
        const bars = el("div", "bars");
        for (let k = 0; k < sizes[p]; k++) {
          const name = el("span", "name", `${this.partNames[p]}=${k}`);
          const track = el("div", "track");
          const fill = el("div", "fill");
          track.append(fill);
          const num = el("span", "num");
          bars.append(name, track, num);
          this.barRows.push({ name, fill, num, part: p, choice: k });
        }
        this.partOffsets.push(offset);
        offset += sizes[p];
        const group = el("div", "part-group");
        group.append(el("div", "subhead", `part ${p}: ${this.partNames[p]}`), bars);
        wrap.append(group);
      }
      panel.append(wrap);
    }

    // The action taken at step t, in words.
    actionText(t) {
      if (this.kind === "component") {
        const parts = [];
        for (let i = 0; i < this.nD; i++) parts.push(signed(this.action[t * this.nD + i]));
        return parts.join("  ");
      }
      if (this.kind === "parts") {
        const parts = [];
        for (let i = 0; i < this.nD; i++) parts.push(`${this.partNames[i]}=${this.action[t * this.nD + i]}`);
        return parts.join(" ");
      }
      const a = this.action[t];
      return this.names[a] ?? `action ${a}`;
    }

    // Whether step t's frames (every pane's) are inflated; asks for those that are not.
    ready(t) {
      let all = this.store.frame(t) !== null;
      for (const k of this.keyMaps) all = k.store.frame(t) !== null && all;
      return all;
    }

    prefetch(t) {
      this.store.prefetch(t);
      for (const k of this.keyMaps) k.store.prefetch(t);
    }

    draw(t) {
      if (!this.ready(t)) return false; // a chunk is being inflated: drawn when it arrives
      const frame = this.store.frame(t);
      const full = this.scales[state.norm][t];
      const off = t * this.h * this.w;
      const down = state.overlay && state.signed && this.camDown;
      if (state.overlay) this.place(this.cam, off, this.ys, this.xs, full, this.heat);
      if (down) this.place(this.camDown, off, this.ys, this.xs, full, this.heatDown);
      this.compose(frame, this.scale, state.overlay ? this.heat : null, this.image, down ? this.heatDown : null);
      this.ctx.putImageData(this.image, 0, 0);
      if (state.objects) this.drawObjects(t);
      this.canvas.dataset.step = String(t);
      this.fullLabel.textContent = `${fmt(full)} = full colour`;
      if (this.actionCams) this.drawTiles(t, frame);
      for (const k of this.keyMaps) this.drawKey(k, t, full);
      return true;
    }

    // Another image key's pane: its frame with its map, on the main map's scale ``full``.
    drawKey(k, t, full) {
      if (state.overlay) this.place(k.cam, t * k.per, k.ys, k.xs, full, k.heat);
      this.compose(k.store.frame(t), this.scale, state.overlay ? k.heat : null, k.image, null, k.store);
      k.ctx.putImageData(k.image, 0, 0);
      k.canvas.dataset.step = String(t);
    }

    drawObjects(t) {
      const ctx = this.ctx;
      ctx.save();
      ctx.lineWidth = 2;
      ctx.font = "600 13px system-ui, sans-serif";
      for (const [name, pos] of Object.entries(this.objects)) {
        const y = pos[2 * t];
        const x = pos[2 * t + 1];
        if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
        ctx.strokeStyle = "rgba(120, 230, 255, 0.95)";
        ctx.beginPath();
        ctx.arc(x * this.scale, y * this.scale, this.spec.object_radius * this.scale, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.fillStyle = "rgba(120, 230, 255, 0.95)";
        ctx.fillText(name, (x + this.spec.object_radius) * this.scale + 4, y * this.scale - 4);
      }
      ctx.restore();
    }

    drawTiles(t, frame) {
      const full = this.actionScales[state.norm][t];
      const per = this.h * this.w;
      for (let a = 0; a < this.nT; a++) {
        const tile = this.tiles[a];
        if (state.overlay) this.place(this.actionCams, (t * this.nT + a) * per, this.tileYs, this.tileXs, full, this.tileHeat);
        this.compose(frame, 1, state.overlay ? this.tileHeat : null, tile.image);
        tile.ctx.putImageData(tile.image, 0, 0);
        const label = this.tileLabels[a];
        if (this.vector) {
          // a tile per component (its taken value), per part (its taken choice) or per critic
          const critic = String(label).startsWith("critic");
          const v = this.action[t * this.nD + a];
          tile.cap.textContent = critic || a >= this.nD ? label : `${label}  ${this.kind === "component" ? signed(v) : `= ${v}`}`;
          continue;
        }
        tile.tile.classList.toggle("on", a === this.action[t]);
        tile.cap.textContent = this.values ? `${label}  ${this.fmtBar(this.values[t * this.nA + a])}` : label;
      }
      const what = this.kind === "component" ? (String(this.tileLabels[0]).startsWith("critic") ? "critic" : "component") : this.kind === "parts" ? "part" : "action";
      this.tileTitle.textContent = `every ${what}'s map, one scale: 0 .. ${fmt(full)}`;
    }

    panel(t) {
      this.actLabel.textContent = this.actionText(t);
      if (this.kind === "component") this.panelComponents(t);
      else if (this.kind === "parts") this.panelParts(t);
      else this.panelActions(t);
      this.panelRest(t);
    }

    panelComponents(t) {
      this.actHow.textContent = this.spec.meta.deterministic ? "deterministic" : "sampled";
      for (let i = 0; i < this.barRows.length; i++) {
        const row = this.barRows[i];
        const v = this.action[t * this.nD + i];
        const a = row.at(Math.min(v, row.origin));
        const b = row.at(Math.max(v, row.origin));
        row.fill.style.left = `${100 * a}%`;
        row.fill.style.width = `${100 * (b - a)}%`;
        row.num.textContent = signed(v);
        const det = this.values ? this.values[t * this.nD + i] : NaN;
        row.tick.hidden = !Number.isFinite(det);
        if (Number.isFinite(det)) row.tick.style.left = `${100 * row.at(det)}%`;
        row.name.classList.add("on");
      }
    }

    panelParts(t) {
      this.actHow.textContent = this.series.chosen ? `joint ${this.fmtBar(this.series.chosen[t])}` : "";
      for (const row of this.barRows) {
        const v = this.values[t * this.nA + this.partOffsets[row.part] + row.choice];
        const taken = this.action[t * this.nD + row.part] === row.choice;
        row.fill.style.width = `${Math.max(0, Math.min(1, v)) * 100}%`;
        row.fill.classList.toggle("on", taken);
        row.name.classList.toggle("on", taken);
        row.num.textContent = this.fmtBar(v);
      }
    }

    panelActions(t) {
      const a = this.action[t];
      this.actHow.textContent = this.values ? this.fmtBar(this.values[t * this.nA + a]) : "";
      for (let i = 0; i < this.barRows.length; i++) {
        const v = this.values[t * this.nA + i];
        const row = this.barRows[i];
        const width = this.spec.bar_kind === "prob" ? v : this.qWidth(t, v);
        row.fill.style.width = `${Math.max(0, Math.min(1, width)) * 100}%`;
        row.fill.classList.toggle("on", i === a);
        row.name.classList.toggle("on", i === a);
        row.num.textContent = this.fmtBar(v);
      }
    }

    panelRest(t) {
      for (const [k, v] of Object.entries(this.stats)) {
        if (k === "score") v.textContent = fmt(this.score[t]);
        else if (k === "episode") v.textContent = String(this.series.episode[t] + 1);
        else if (k.startsWith("share_")) v.textContent = Number.isFinite(this.series[k][t]) ? `${(100 * this.series[k][t]).toFixed(1)}%` : "off screen";
        else if (k === "entropy") v.textContent = fmt(this.series[k][t], 3);
        else v.textContent = fmt(this.series[k][t]);
      }
      if (this.inputRows) {
        for (const row of this.inputRows) {
          const v = this.series[row.k][t];
          row.fill.style.width = `${Math.max(0, Math.min(1, v)) * 100}%`;
          row.num.textContent = Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "\u2013";
        }
      }
      for (const { share, values } of this.paneShares || []) {
        share.textContent = Number.isFinite(values[t]) ? `${(100 * values[t]).toFixed(1)}% of the score` : "";
      }
      if (this.elementRows) {
        let peak = 0;
        for (const row of this.elementRows) peak = Math.max(peak, Math.abs(row.values[t * row.dim + row.i]) || 0);
        for (const row of this.elementRows) {
          const v = row.values[t * row.dim + row.i];
          const reach = peak > 0 && Number.isFinite(v) ? (50 * Math.abs(v)) / peak : 0;
          row.fill.style.left = `${v < 0 ? 50 - reach : 50}%`;
          row.fill.style.width = `${reach}%`;
          row.fill.className = `fill ${v < 0 ? "down" : "up"}`;
          row.num.textContent = fmtSigned(v);
        }
        this.elementPeak.textContent = `\u00b1${fmt(peak)}`;
      }
      if (this.shareRows) {
        const nC = this.shareRows.length;
        for (let c = 0; c < nC; c++) {
          const v = this.frameShares[t * nC + c];
          this.shareRows[c].fill.style.width = `${Math.max(0, Math.min(1, v)) * 100}%`;
          this.shareRows[c].num.textContent = `${(100 * v).toFixed(0)}%`;
        }
      }
      const flags = [];
      if (this.gameOver[t]) flags.push("game over");
      else if (this.done[t]) flags.push("life lost");
      this.headInfo.textContent = `game ${this.series.episode[t] + 1}${flags.length ? " \u00b7 " + flags.join(", ") : ""}`;
    }

    qWidth(t, v) {
      // Q bars: from the step's lowest Q to its highest (all equal: full).
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < this.nA; i++) {
        const q = this.values[t * this.nA + i];
        lo = Math.min(lo, q);
        hi = Math.max(hi, q);
      }
      return hi > lo ? 0.08 + (0.92 * (v - lo)) / (hi - lo) : 1;
    }
  }

  // A raw value with its sign, in fmt's digits (attributions are often far below 1e-3).
  function fmtSigned(v) {
    if (!Number.isFinite(v)) return "\u2013";
    return `${v < 0 ? "\u2212" : "+"}${fmt(Math.abs(v), 3)}`;
  }

  function signed(v) {
    if (!Number.isFinite(v)) return "\u2013";
    return `${v < 0 ? "\u2212" : "+"}${Math.abs(v).toFixed(3)}`;
  }

  function fmt(v, digits = 4) {
    if (v === null || v === undefined || Number.isNaN(v)) return "\u2013";
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
    return Number(v.toPrecision(digits)).toString();
  }

  // -- header, notes, details -------------------------------------------------------------------------

  const runs = D.runs.map((spec, i) => new Run(spec, i));
  if (runs.length > 1) document.body.classList.add("compare");

  function header() {
    $("title").textContent = D.title;
    const m = D.runs[0].meta;
    const chips = [
      ["env", m.env_id],
      ["algo", runs.map((r) => String(r.spec.meta.algo).toUpperCase()).join(" vs ")],
      ["steps", String(T)],
      ["games ended", String(m.episodes_ended ?? "?")],
      ["seed", String(m.seed)],
      ["family", m.family || "discrete"],
      ["actions", m.deterministic ? "deterministic" : "sampled"],
      ["norm in video", m.normalisation],
    ];
    if (D.compare) chips.unshift(["compare", D.compare.mode]);
    for (const [k, v] of chips) {
      const c = el("span", "chip", `${k} `);
      c.append(el("b", "", v));
      $("chips").append(c);
    }
    if (m.video_link) {
      const c = el("span", "chip", "video ");
      const a = el("a", "", m.video_link);
      a.href = encodeURI(m.video_link);
      c.append(a);
      $("chips").append(c);
    }
    const notes = $("notes");
    notes.append(
      el("p", "", "Frames were rebuilt by replaying the trace's actions from its seed, checked step by step against its rewards, lives, game ends and object positions."),
    );
    const key = runs[0].space.image_key;
    if (key && runs[0].keyMaps.length) {
      const others = runs[0].keyMaps.map((k) => `"${k.key}"`).join(", ");
      notes.append(el("p", "", `Dict observations: the frames are the observation's image keys as the agent saw them; the layer is on "${key}", and ${others} ${runs[0].keyMaps.length > 1 ? "are" : "is"} mapped for the same score at ${runs[0].keyMaps.length > 1 ? "their" : "its"} own layer, on the same colour scale.`));
    } else if (key) notes.append(el("p", "", `Dict observations: each frame is the observation's "${key}" key, the image the map is on, as the video shows it; the env's render would not be the agent's view.`));
    for (const r of runs) for (const n of r.spec.notes) notes.append(el("p", "", `${r.spec.label}: ${n}`));
    const table = el("table");
    const keys = new Set();
    for (const r of runs) for (const k of Object.keys(r.spec.meta)) keys.add(k);
    for (const k of keys) {
      const tr = el("tr");
      tr.append(el("td", "", k));
      for (const r of runs) {
        const v = r.spec.meta[k];
        tr.append(el("td", "", typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)));
      }
      table.append(tr);
    }
    $("meta").append(table);
  }

  // -- timeline -------------------------------------------------------------------------------------------

  const tl = {
    canvas: $("timeline"),
    tracks: [],
    plotLeft: 128,
    plotRight: 14,
    top: 22,
    trackH: 44,
    gap: 8,
    hover: -1,
  };

  function buildTracks() {
    const kinds = [...new Set(runs.map((r) => r.spec.bar_kind))];
    const pct = (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "\u2013");
    // One track per quantity; a quantity in other units per run (probabilities vs Q-values) gets a track per kind.
    const add = (key, label, opts = {}, kind = null) => {
      const chosen = runs.filter((r) => r.series[key] && (kind === null || r.spec.bar_kind === kind));
      if (!chosen.length) return;
      const lines = chosen.map((r) => r.series[key]);
      tl.tracks.push({ key, label, lines, colours: chosen.map((r) => RUN_COLOURS[r.index]), ...opts });
    };
    const valueLabels = [...new Set(runs.map((r) => r.spec.value_label))];
    add("value", valueLabels.length === 1 && valueLabels[0] ? valueLabels[0] : "value");
    for (const kind of kinds) {
      if (kind === "prob") {
        add("chosen", "P(chosen)", { fmt: pct }, kind);
        add("entropy", "entropy", {}, kind);
      } else if (kind === "parts") {
        add("chosen", "P(taken parts)", { fmt: pct }, kind);
        add("entropy", "entropy (joint)", {}, kind);
      } else if (kind === "component") {
        // a track per component, on its bounds
        const r0 = runs.find((r) => r.kind === kind);
        for (let i = 0; i < r0.nD; i++) {
          const lo = (r0.space.low || [])[i];
          const hi = (r0.space.high || [])[i];
          const range = Number.isFinite(lo) && Number.isFinite(hi) && hi > lo ? { lo, hi } : {};
          add(`component_${i}`, `${r0.partNames[i]} taken`, { fmt: signed, range }, kind);
        }
      } else {
        add("chosen", "Q(chosen)", {}, kind);
        add("margin", "Q gap", {}, kind);
      }
    }
    add("return", "return", { bars: "reward" });
    add("peak", "map peak");
    add("peak_down", "down peak");
    add("memory_effect", "memory effect");
    add("pixel_effect", "pixel effect");
    const inputs = new Set();
    for (const r of runs) for (const k of r.inputShares) inputs.add(k);
    for (const k of inputs) add(k, `share: ${k.slice("input_".length)}`, { fmt: pct, range: { lo: 0, hi: 1 } });
    const objects = new Set();
    for (const r of runs) for (const k of Object.keys(r.objects)) objects.add(k);
    for (const k of objects) add(`share_${k}`, `on ${k}`, { fmt: pct });
    if (D.compare) {
      const c = D.compare;
      tl.tracks.push({ key: "agree", label: "actions agree", lines: [arr(c.agree)], binary: true, colours: ["rgb(140, 220, 160)"] });
      if (c.correlation) tl.tracks.push({ key: "corr", label: "map rank corr.", lines: [arr(c.correlation)], colours: ["rgb(200, 160, 255)"] });
      if (c.top_overlap) tl.tracks.push({ key: "iou", label: "top-10% overlap", lines: [arr(c.top_overlap)], colours: ["rgb(120, 200, 220)"] });
    }
    for (const track of tl.tracks) {
      let lo = Infinity;
      let hi = -Infinity;
      for (const line of track.lines) {
        for (let t = 0; t < T; t++) {
          const v = line[t];
          if (Number.isFinite(v)) {
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
          }
        }
      }
      if (!Number.isFinite(lo)) {
        lo = 0;
        hi = 1;
      }
      if (track.binary) {
        lo = 0;
        hi = 1;
      }
      if (track.range && track.range.hi > track.range.lo) {
        lo = Math.min(lo, track.range.lo);
        hi = Math.max(hi, track.range.hi);
      }
      if (hi === lo) {
        lo -= 0.5;
        hi += 0.5;
      }
      track.lo = lo;
      track.hi = hi;
      track.fmt = track.fmt || fmt;
    }
  }

  function plotWidth() {
    return tl.cssWidth - tl.plotLeft - tl.plotRight;
  }
  function xAt(t) {
    return tl.plotLeft + (T > 1 ? (t / (T - 1)) * plotWidth() : plotWidth() / 2);
  }
  function stepAt(x) {
    const t = T > 1 ? Math.round(((x - tl.plotLeft) / plotWidth()) * (T - 1)) : 0;
    return Math.max(0, Math.min(T - 1, t));
  }

  function drawTimelineBase() {
    const cv = tl.canvas;
    const dpr = window.devicePixelRatio || 1;
    tl.cssWidth = cv.clientWidth || 800;
    const cssH = tl.top + tl.tracks.length * (tl.trackH + tl.gap) + 6;
    cv.style.height = `${cssH}px`;
    cv.width = Math.round(tl.cssWidth * dpr);
    cv.height = Math.round(cssH * dpr);
    cv.dataset.plotLeft = String(tl.plotLeft);
    cv.dataset.plotWidth = String(plotWidth());
    const g = cv.getContext("2d"); // resizing the canvas above cleared it and its transform
    g.scale(dpr, dpr);
    const pw = plotWidth();
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    // step axis
    g.fillStyle = "rgb(150, 150, 162)";
    g.strokeStyle = "rgb(52, 52, 64)";
    const every = niceStep(T, pw / 90);
    g.textAlign = "center";
    for (let t = 0; t < T; t += every) {
      const x = xAt(t);
      g.fillText(String(t), x, 10);
      g.beginPath();
      g.moveTo(x + 0.5, tl.top - 4);
      g.lineTo(x + 0.5, cssH - 4);
      g.stroke();
    }
    // life losses and game ends, across every track
    const r0 = runs[0];
    for (let t = 0; t < T; t++) {
      if (!r0.done[t] && !r0.gameOver[t]) continue;
      const x = Math.round(xAt(t)) + 0.5;
      g.strokeStyle = r0.gameOver[t] ? "rgba(232, 232, 236, 0.8)" : "rgba(216, 32, 81, 0.75)";
      g.lineWidth = r0.gameOver[t] ? 2 : 1;
      g.beginPath();
      g.moveTo(x, tl.top - 4);
      g.lineTo(x, cssH - 4);
      g.stroke();
    }
    g.lineWidth = 1;
    tl.tracks.forEach((track, i) => {
      const y0 = tl.top + i * (tl.trackH + tl.gap);
      track.y0 = y0;
      g.fillStyle = "rgba(38, 38, 48, 0.55)";
      g.fillRect(tl.plotLeft, y0, pw, tl.trackH);
      g.textAlign = "right";
      g.fillStyle = "rgb(232, 232, 236)";
      g.font = "600 12px system-ui, sans-serif";
      g.fillText(track.label, tl.plotLeft - 10, y0 + tl.trackH / 2 - 6);
      g.font = "10px system-ui, sans-serif";
      g.fillStyle = "rgb(150, 150, 162)";
      g.fillText(`${track.fmt(track.lo)} .. ${track.fmt(track.hi)}`, tl.plotLeft - 10, y0 + tl.trackH / 2 + 8);
      const yOf = (v) => y0 + tl.trackH - 3 - ((v - track.lo) / (track.hi - track.lo)) * (tl.trackH - 6);
      if (track.bars) {
        runs.forEach((r, k) => {
          const rw = r.series[track.bars];
          g.fillStyle = k === 0 ? "rgba(255, 216, 123, 0.55)" : "rgba(110, 190, 255, 0.55)";
          for (let t = 0; t < T; t++) if (rw[t] > 0) g.fillRect(Math.round(xAt(t)) - 1, y0 + tl.trackH - 9, 2, 8);
        });
      }
      track.lines.forEach((line, k) => {
        g.strokeStyle = track.colours[k];
        g.fillStyle = track.colours[k];
        if (track.binary) {
          for (let t = 0; t < T; t++) {
            if (line[t] >= 0.5) continue;
            g.fillStyle = "rgba(255, 110, 140, 0.85)";
            g.fillRect(xAt(t) - Math.max(1, pw / T / 2), y0 + 3, Math.max(2, pw / T), tl.trackH - 6);
          }
          return;
        }
        drawLine(g, line, yOf, pw);
      });
    });
    timelineMarks();
  }

  function niceStep(n, ticks) {
    const raw = n / Math.max(1, ticks);
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  // A series as a line; with more steps than pixels, each pixel column shows its steps' min..max.
  function drawLine(g, line, yOf, pw) {
    g.lineWidth = 1.5;
    if (T <= pw) {
      g.beginPath();
      let pen = false;
      for (let t = 0; t < T; t++) {
        const v = line[t];
        if (!Number.isFinite(v)) {
          pen = false;
          continue;
        }
        const x = xAt(t);
        const y = yOf(v);
        if (pen) g.lineTo(x, y);
        else g.moveTo(x, y);
        pen = true;
      }
      g.stroke();
      return;
    }
    const cols = Math.ceil(pw);
    for (let c = 0; c < cols; c++) {
      const a = stepAt(tl.plotLeft + c);
      const b = Math.max(a, stepAt(tl.plotLeft + c + 1) - 1);
      let lo = Infinity;
      let hi = -Infinity;
      for (let t = a; t <= b; t++) {
        const v = line[t];
        if (Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
      if (!Number.isFinite(lo)) continue;
      const y1 = yOf(hi);
      const y2 = yOf(lo);
      g.fillRect(tl.plotLeft + c, y1 - 0.75, 1, Math.max(1.5, y2 - y1 + 1.5));
    }
  }

  // The tracks are drawn once (and on resize); the cursor, the hover line and the current values are
  // elements moved over them, so a step repaints a few pixels rather than the whole timeline.
  function timelineMarks() {
    const wrap = $("timeline-wrap");
    for (const e of wrap.querySelectorAll(".tl-mark")) e.remove();
    const h = tl.canvas.clientHeight;
    const line = (cls, colour, width) => {
      const d = el("div", `tl-mark ${cls}`);
      Object.assign(d.style, {
        position: "absolute", left: "0", top: `${tl.canvas.offsetTop + tl.top - 4}px`, width: `${width}px`,
        height: `${h - tl.top}px`, background: colour, pointerEvents: "none",
      });
      wrap.append(d);
      return d;
    };
    tl.hoverLine = line("hover", "rgba(232, 232, 236, 0.35)", 1);
    tl.cursor = line("cursor", "rgb(255, 216, 123)", 2);
    const head = el("div");
    Object.assign(head.style, {
      position: "absolute", left: "-4px", top: "-6px", width: "0", height: "0",
      borderLeft: "5px solid transparent", borderRight: "5px solid transparent", borderTop: "6px solid rgb(255, 216, 123)",
    });
    tl.cursor.append(head);
    tl.left = tl.canvas.offsetLeft; // read here, once: reading layout every step would force a reflow
    tl.canvasTop = tl.canvas.offsetTop;
    tl.dots = [];
    for (const track of tl.tracks) {
      if (track.binary) continue;
      track.lines.forEach((values, k) => {
        const d = el("div", "tl-mark dot");
        Object.assign(d.style, {
          position: "absolute", left: "0", top: "0", width: "7px", height: "7px", borderRadius: "50%",
          background: track.colours[k], pointerEvents: "none",
        });
        wrap.append(d);
        tl.dots.push({ d, values, track });
      });
    }
  }

  function drawTimeline() {
    if (!tl.cursor) return;
    const left = tl.left;
    const x = left + xAt(state.step);
    tl.cursor.style.transform = `translateX(${Math.round(x) - 1}px)`;
    const hover = tl.hover >= 0 && tl.hover !== state.step;
    tl.hoverLine.style.display = hover ? "block" : "none";
    if (hover) tl.hoverLine.style.transform = `translateX(${Math.round(left + xAt(tl.hover))}px)`;
    const top = tl.canvasTop;
    for (const { d, values, track } of tl.dots) {
      const v = values[state.step];
      if (!Number.isFinite(v)) {
        d.style.display = "none";
        continue;
      }
      const y = top + track.y0 + tl.trackH - 3 - ((v - track.lo) / (track.hi - track.lo)) * (tl.trackH - 6);
      d.style.display = "block";
      d.style.transform = `translate(${x - 3.5}px, ${y - 3.5}px)`;
    }
  }

  function showTip(clientX, clientY) {
    const tip = $("tip");
    const rect = tl.canvas.getBoundingClientRect();
    const x = clientX - rect.left;
    if (x < tl.plotLeft - 4 || x > tl.cssWidth - tl.plotRight + 4) {
      tip.hidden = true;
      tl.hover = -1;
      drawTimeline();
      return;
    }
    const t = stepAt(x);
    tl.hover = t;
    tip.replaceChildren();
    const r0 = runs[0];
    const flag = r0.gameOver[t] ? " \u00b7 game over" : r0.done[t] ? " \u00b7 life lost" : "";
    tip.append(el("div", "t", `step ${t}${flag}`));
    const table = el("table");
    const names = el("tr");
    names.append(el("td", "", "action"));
    for (const r of runs) {
      const cell = el("td", "n", r.actionText(t));
      if (runs.length > 1) cell.style.color = RUN_COLOURS[r.index];
      names.append(cell);
    }
    table.append(names);
    for (const track of tl.tracks) {
      const tr = el("tr");
      tr.append(el("td", "", track.label));
      track.lines.forEach((line, k) => {
        const cell = el("td", "n", track.binary ? (line[t] >= 0.5 ? "yes" : "no") : track.fmt(line[t]));
        if (track.lines.length > 1 || runs.length > 1) cell.style.color = track.colours[k];
        tr.append(cell);
      });
      table.append(tr);
    }
    tip.append(table);
    tip.hidden = false;
    const wrap = $("timeline-wrap").getBoundingClientRect();
    const left = clientX - wrap.left + 16;
    tip.style.left = `${Math.min(left, wrap.width - tip.offsetWidth - 8)}px`;
    tip.style.top = `${Math.max(0, clientY - wrap.top - tip.offsetHeight / 2)}px`;
    drawTimeline();
  }

  function timelineEvents() {
    const cv = tl.canvas;
    let dragging = false;
    const seek = (e) => {
      const rect = cv.getBoundingClientRect();
      goto(stepAt(e.clientX - rect.left));
    };
    cv.addEventListener("pointerdown", (e) => {
      dragging = true;
      cv.setPointerCapture(e.pointerId);
      pause();
      seek(e);
    });
    cv.addEventListener("pointermove", (e) => {
      if (dragging) seek(e);
      showTip(e.clientX, e.clientY);
    });
    cv.addEventListener("pointerup", (e) => {
      dragging = false;
      cv.releasePointerCapture(e.pointerId);
    });
    cv.addEventListener("pointerleave", () => {
      $("tip").hidden = true;
      tl.hover = -1;
      drawTimeline();
    });
    new ResizeObserver(() => {
      drawTimelineBase();
      drawTimeline();
    }).observe($("timeline-wrap"));
  }

  // -- moments ---------------------------------------------------------------------------------------------

  const momentButtons = [];
  function moments() {
    const box = $("moments");
    const groups = [];
    if (D.compare && D.compare.spans) {
      groups.push({
        title: "Longest disagreements",
        items: D.compare.spans.map((s) => ({ step: s.start, text: `steps ${s.start}\u2013${s.end} (${s.end - s.start + 1})` })),
      });
    }
    runs.forEach((r) => {
      for (const g of r.spec.moments) groups.push({ ...g, title: runs.length > 1 ? `${g.title} \u00b7 ${r.spec.label}` : g.title });
    });
    for (const g of groups) {
      const card = el("div", "moment-card");
      card.dataset.kind = g.kind || "";
      card.append(el("h3", "", g.title));
      const list = el("ol");
      if (!g.items.length) list.append(el("li", "none", "none in this run"));
      for (const item of g.items) {
        const li = el("li");
        const b = el("button");
        b.type = "button";
        b.dataset.step = String(item.step);
        b.append(el("span", "s", String(item.step)), el("span", "", item.text));
        b.addEventListener("click", () => {
          pause();
          goto(item.step);
        });
        li.append(b);
        list.append(li);
        momentButtons.push(b);
      }
      card.append(list);
      box.append(card);
    }
  }

  // -- stepping, playing, keys, the address -------------------------------------------------------------------

  let firstDrawn = false;
  let pendingHash = null;

  function render() {
    const t0 = performance.now();
    let all = true;
    const phases = { frames: 0, panels: 0, timeline: 0 };
    for (const r of runs) {
      const a = performance.now();
      all = r.draw(state.step) && all;
      const b = performance.now();
      r.panel(state.step);
      r.prefetch(state.step);
      phases.frames += b - a;
      phases.panels += performance.now() - b;
    }
    if (D.compare) {
      const c = D.compare;
      const agree = c.agreeArr[state.step] >= 0.5;
      for (const r of runs) {
        r.agreeLabel.hidden = false;
        r.agreeLabel.className = `agree ${agree ? "yes" : "no"}`;
        r.agreeLabel.textContent = agree ? "agree" : "disagree";
      }
    }
    $("step").textContent = String(state.step);
    for (const b of momentButtons) b.classList.toggle("here", Number(b.dataset.step) === state.step);
    const c = performance.now();
    drawTimeline();
    phases.timeline = performance.now() - c;
    window.rlcam.lastPhases = phases; // what the redraw spent where (scripts/report_benchmark.py)
    window.rlcam.lastDrawMs = performance.now() - t0;
    if (all && !firstDrawn) {
      firstDrawn = true;
      window.rlcam.firstFrameMs = performance.now();
      performance.mark("rlcam-first-frame");
      document.body.dataset.ready = "1";
    }
    return all;
  }

  function goto(t) {
    t = Math.max(0, Math.min(T - 1, Math.round(t)));
    state.step = t;
    render();
    clearTimeout(pendingHash);
    pendingHash = setTimeout(() => {
      const hash = `#step=${state.step}`;
      if (location.hash !== hash) {
        try {
          history.replaceState(null, "", hash);
        } catch (e) {
          location.replace(hash);
        }
      }
    }, state.playing ? 250 : 0);
  }

  function stepFromHash() {
    const m = /step=(\d+)/.exec(location.hash);
    return m ? Number(m[1]) : null;
  }

  let lastTick = 0;
  let carry = 0;
  function tick(now) {
    if (!state.playing) return;
    carry += ((now - lastTick) / 1000) * (D.fps || 30) * state.speed;
    lastTick = now;
    const n = Math.floor(carry);
    if (n > 0) {
      carry -= n;
      if (state.step + n >= T - 1) {
        goto(T - 1);
        pause();
        return;
      }
      goto(state.step + n);
    }
    requestAnimationFrame(tick);
  }
  function play() {
    if (state.playing) return;
    if (state.step >= T - 1) goto(0);
    state.playing = true;
    $("play").innerHTML = "&#x275A;&#x275A; pause";
    lastTick = performance.now();
    carry = 0;
    requestAnimationFrame(tick);
  }
  function pause() {
    state.playing = false;
    $("play").innerHTML = "&#x25B6; play";
  }

  function setNorm(n) {
    state.norm = n;
    for (const b of document.querySelectorAll("#norm button")) b.classList.toggle("on", b.dataset.norm === n);
    render();
  }

  function controls() {
    $("last-step").textContent = String(T - 1);
    $("first").onclick = () => goto(0);
    $("last").onclick = () => goto(T - 1);
    $("back").onclick = () => goto(state.step - 1);
    $("fwd").onclick = () => goto(state.step + 1);
    $("back10").onclick = () => goto(state.step - 10);
    $("fwd10").onclick = () => goto(state.step + 10);
    $("play").onclick = () => (state.playing ? pause() : play());
    $("speed").onchange = (e) => (state.speed = Number(e.target.value));
    $("overlay").onchange = (e) => {
      state.overlay = e.target.checked;
      render();
    };
    $("signed").onchange = (e) => {
      state.signed = e.target.checked;
      render();
    };
    if (!runs.some((r) => r.camDown)) $("signed").parentElement.hidden = true;
    $("objects").onchange = (e) => {
      state.objects = e.target.checked;
      render();
    };
    if (!runs.some((r) => Object.keys(r.objects).length)) $("objects").parentElement.hidden = true;
    $("opacity").oninput = (e) => {
      setAlpha(Number(e.target.value) / 100);
      $("opacity-value").textContent = state.alpha.toFixed(2);
      render();
    };
    for (const b of document.querySelectorAll("#norm button")) b.onclick = () => setNorm(b.dataset.norm);
    $("help-button").onclick = () => ($("help").hidden = !$("help").hidden);
    $("help").onclick = () => ($("help").hidden = true);
    // Buttons keep no focus, so Space always plays and never re-clicks the last button pressed.
    for (const b of document.querySelectorAll("button, input[type=checkbox]")) b.addEventListener("pointerup", () => b.blur());
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
      const big = e.shiftKey ? 10 : 1;
      const keys = {
        ArrowLeft: () => goto(state.step - big),
        ArrowRight: () => goto(state.step + big),
        Home: () => goto(0),
        End: () => goto(T - 1),
        " ": () => (state.playing ? pause() : play()),
        o: () => {
          $("overlay").checked = !$("overlay").checked;
          $("overlay").onchange({ target: $("overlay") });
        },
        n: () => setNorm(NORMS[(NORMS.indexOf(state.norm) + 1) % NORMS.length]),
        s: () => {
          if ($("signed").parentElement.hidden) return;
          $("signed").checked = !$("signed").checked;
          $("signed").onchange({ target: $("signed") });
        },
        "?": () => ($("help").hidden = !$("help").hidden),
        Escape: () => ($("help").hidden = true),
      };
      const f = keys[e.key] || keys[e.key.toLowerCase()];
      if (!f) return;
      e.preventDefault();
      if (e.key !== " " && e.key.startsWith("Arrow")) pause();
      f();
    });
    window.addEventListener("hashchange", () => {
      const t = stepFromHash();
      if (t !== null && t !== state.step) goto(t);
    });
  }

  // -- start ------------------------------------------------------------------------------------------------

  window.rlcam = {
    steps: T,
    get step() {
      return state.step;
    },
    get norm() {
      return state.norm;
    },
    goto,
    tracks: () => tl.tracks.map((t) => t.label), // the timeline's tracks, top to bottom
    lastDrawMs: 0,
    firstFrameMs: null,
  };
  if (D.compare) D.compare.agreeArr = arr(D.compare.agree);
  header();
  buildTracks();
  moments();
  controls();
  const start = stepFromHash();
  state.step = start === null ? 0 : Math.max(0, Math.min(T - 1, start));
  for (const s of stores) {
    s.prefetch(state.step);
    s.listeners.push(() => {
      for (const r of runs) if (r.canvas.dataset.step !== String(state.step) && r.ready(state.step)) render();
    });
    s.loadAll();
  }
  drawTimelineBase();
  setNorm(state.norm);
  timelineEvents();
})();
