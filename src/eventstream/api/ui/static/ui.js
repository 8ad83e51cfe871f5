// The dashboard's only script besides htmx: no inline code anywhere (the pages'
// Content-Security-Policy allows scripts from this server only).
document.addEventListener("change", (e) => {
  const all = e.target.closest("input[data-select-all]");
  if (!all) return;
  const form = all.form;
  if (!form) return;
  for (const box of form.querySelectorAll('input[type="checkbox"][name="id"]')) box.checked = all.checked;
});
