// Starts Swagger UI on the document the page names. It lives in a file, not inline, so the
// page's Content-Security-Policy can refuse every inline script.
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    // The default would load a badge from validator.swagger.io: no request leaves the server.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
