// Shared by both pages: the registry the data scripts call, and a loader for them.
// Data comes as <script> files (not fetch/XHR), because browsers refuse fetch of file:// URLs;
// scripts run from file:// pages, so the report opens by double-click and from any web server.
"use strict";
window.XAIMED_REPORT = (function () {
  const waiting = {};
  const values = {};
  function settle(key, value) {
    values[key] = value;
    if (waiting[key]) {
      waiting[key].forEach((resolve) => resolve(value));
      delete waiting[key];
    }
  }
  function load(src, key) {
    if (key in values) return Promise.resolve(values[key]);
    return new Promise((resolve, reject) => {
      (waiting[key] = waiting[key] || []).push(resolve);
      const script = document.createElement("script");
      script.src = src;
      script.onerror = () => reject(new Error("could not load " + src));
      document.head.appendChild(script);
    });
  }
  function base64ToBuffer(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }
  function el(tag, attrs, ...children) {
    // Text goes in as text nodes, never as HTML: case ids and messages are data.
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    if (typeof value !== "number") return String(value);
    return Number(value).toPrecision(digits || 4).replace(/\.?0+(e|$)/, "$1");
  }
  return {
    index: (data) => settle("index", data),
    caseData: (data) => settle("case", data),
    volume: (key, text) => settle(key, text),
    load, base64ToBuffer, el, fmt,
  };
})();
